"""Leader election on a coordination.k8s.io Lease: of several operator replicas one writes.

The official client's `kubernetes.leaderelection` does the election (as client-go does: a
candidate takes the Lease once its holder has not renewed it for a whole lease duration, as
timed by the candidate's own clock). Two things are added here. Every Lease call carries a
timeout, so that a leader whose API server hangs notices within its renew deadline instead of
blocking past the lease's end while a standby takes over; and the leader releases the Lease
when it stops cleanly, so that a rolling update hands over in seconds, not a lease duration.

A leader that fails to renew within the deadline must stop writing before any standby may
take the Lease: `on_lost` is called then, and the operator exits (its pod restarts as a
standby). The deadline, one retry and one call timeout fit inside the lease duration: Lease
calls go through a client of their own that never retries inside a call (the operator's
client retries three times, which made one renew last up to four call timeouts), and a failed
call of any kind (a refused connection, a reset, a timeout) counts as a failed attempt; the
library catches only the API server's own errors, and any other one ended its thread: the
leader wrote on without renewing, and a standby stood by for good.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from tritonscale.clients.kube import KubeClient
from tritonscale.permissions import LEADER_LEASE

LEASE_DURATION_S: Final = 20
RENEW_DEADLINE_S: Final = 10
RETRY_PERIOD_S: Final = 2
CALL_TIMEOUT_S: Final = 2.0
LEASE_NAME: Final = LEADER_LEASE
log = logging.getLogger(__name__)

# The library logs every attempt at INFO (a line every two seconds from each standby).
logging.getLogger("leaderelection").setLevel(logging.WARNING)


class _TimedCalls:
    """An API object whose every method call carries a request timeout, and fails with an
    ApiException (status 0) whatever went wrong: the election library handles no other error."""

    def __init__(self, api: Any, timeout_s: float) -> None:
        self._api = api
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, _request_timeout=self._timeout_s, **kwargs)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise ApiException(status=0, reason=f"{type(error).__name__}: {error}") from error

        return call


def lease_api(kube: KubeClient) -> Any:
    """The coordination API on a client of its own that never retries within a call."""
    configuration = copy.deepcopy(kube.api_client.configuration)
    configuration.retries = 0
    return kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient(configuration))


class _ReleasableLeaseLock(LeaseLock):
    """A LeaseLock that writes nothing once released, so the renew loop cannot take it back."""

    released = False

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return not self.released and bool(super().create(name, namespace, election_record))  # type: ignore[no-untyped-call]

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return not self.released and bool(super().update(name, namespace, updated_record))  # type: ignore[no-untyped-call]


class Leadership:
    """Blocks in :meth:`wait` until this process holds the Lease; calls `on_lost` if it stops."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        identity: str,
        on_lost: Callable[[], None],
        name: str = LEASE_NAME,
        coordination: Any | None = None,
    ) -> None:
        """`coordination`: the CoordinationV1 API to use (tests); else lease_api(kube)."""
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._on_lost = on_lost
        self._coordination = _TimedCalls(coordination or lease_api(kube), CALL_TIMEOUT_S)
        self._lock = _ReleasableLeaseLock(name, namespace, identity)  # type: ignore[no-untyped-call]
        self._lock.api_instance = self._coordination  # type: ignore[assignment]
        self._leading = threading.Event()
        self._election = leaderelection.LeaderElection(
            electionconfig.Config(  # type: ignore[no-untyped-call]
                self._lock,
                lease_duration=LEASE_DURATION_S,
                renew_deadline=RENEW_DEADLINE_S,
                retry_period=RETRY_PERIOD_S,
                onstarted_leading=self._leading.set,
                onstopped_leading=self._stopped,
            )
        )

    @property
    def leading(self) -> bool:
        return self._leading.is_set() and not self._lock.released

    def wait(self, stop_flag: threading.Event | None = None) -> bool:
        """Campaign in a background thread; return True once leading, False if `stop_flag` is
        set first."""
        log.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        threading.Thread(target=self._campaign, name="leader-election", daemon=True).start()
        while not self._leading.wait(0.5):
            if stop_flag is not None and stop_flag.is_set():
                return False
        log.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def release(self) -> None:
        """Give the Lease up at a clean stop, so a standby need not wait for it to expire."""
        if not self.leading:
            return
        self._lock.released = True
        try:
            lease = self._coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            # An empty holder: the library's candidates take a Lease without one at once.
            lease.spec.holder_identity = None
            self._coordination.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except ApiException as error:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, error)

    def _campaign(self) -> None:
        """The library's election loop, kept alive: an error it lets through stops a leader (as
        a lost Lease does) and puts a standby back to campaigning."""
        while True:
            try:
                self._election.run()  # type: ignore[no-untyped-call]
                return  # the leader failed to renew: _stopped has run
            except Exception as error:
                if self._leading.is_set():
                    log.critical("leader election failed while leading: %s", error)
                    self._stopped()
                    return
                log.warning("leader election attempt failed: %s; campaigning again", error)
                time.sleep(RETRY_PERIOD_S)

    def _stopped(self) -> None:
        if self._lock.released:
            return
        log.critical(
            "lost Lease %s/%s (not renewed within %ds): stopping so that only one operator writes",
            self.namespace,
            self.name,
            RENEW_DEADLINE_S,
        )
        self._on_lost()
