"""Leader election on a coordination.k8s.io Lease: of several operator replicas one writes.

The official client's `kubernetes.leaderelection` does the election (as client-go does: a
candidate takes the Lease once its holder has not renewed it for a whole lease duration, as
timed by the candidate's own clock). Two things are added here. Every Lease call carries a
timeout, so that a leader whose API server hangs notices within its renew deadline instead of
blocking past the lease's end while a standby takes over; and the leader releases the Lease
when it stops cleanly, so that a rolling update hands over in seconds, not a lease duration.

A leader that fails to renew within the deadline must stop writing before any standby may
take the Lease: `on_lost` is called then, and the operator exits (its pod restarts as a
standby). The deadline, one retry and one call timeout fit inside the lease duration.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import kubernetes
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
    """An API object whose every method call carries a request timeout."""

    def __init__(self, api: Any, timeout_s: float) -> None:
        self._api = api
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._api, name), _request_timeout=self._timeout_s)


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
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._coordination = kubernetes.client.CoordinationV1Api(kube.api_client)
        self._lock = _ReleasableLeaseLock(name, namespace, identity)  # type: ignore[no-untyped-call]
        self._lock.api_instance = _TimedCalls(self._coordination, CALL_TIMEOUT_S)  # type: ignore[assignment]
        self._leading = threading.Event()
        self._election = leaderelection.LeaderElection(
            electionconfig.Config(  # type: ignore[no-untyped-call]
                self._lock,
                lease_duration=LEASE_DURATION_S,
                renew_deadline=RENEW_DEADLINE_S,
                retry_period=RETRY_PERIOD_S,
                onstarted_leading=self._leading.set,
                onstopped_leading=functools.partial(self._stopped, on_lost),
            )
        )

    @property
    def leading(self) -> bool:
        return self._leading.is_set() and not self._lock.released

    def wait(self, stop_flag: threading.Event | None = None) -> bool:
        """Campaign in a background thread; return True once leading, False if `stop_flag` is
        set first."""
        log.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        threading.Thread(target=self._election.run, name="leader-election", daemon=True).start()
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
            lease = self._coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=CALL_TIMEOUT_S
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            # An empty holder: the library's candidates take a Lease without one at once.
            lease.spec.holder_identity = None
            self._coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=CALL_TIMEOUT_S
            )
            log.info("released Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError) as error:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, error)

    def _stopped(self, on_lost: Callable[[], None]) -> None:
        if self._lock.released:
            return
        log.critical(
            "lost Lease %s/%s (not renewed within %ds): stopping so that only one operator writes",
            self.namespace,
            self.name,
            RENEW_DEADLINE_S,
        )
        on_lost()
