"""An operator process that stops dead in the middle of its first reconcile.

Run by ``test_operator.py`` as ``python interrupted_operator.py KUBECONFIG NAMESPACE WRITES``: it
is the real operator (``run_operator``) except that, after WRITES real server-side applies, the
apply call prints ``paused after N writes`` and hangs, so the test can SIGKILL the process at a
known point of the reconcile (some children written, the rest and the status not).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tritonscale.app import run_operator
from tritonscale.clients.kube import KubeClient
from tritonscale.config import OperatorConfig

PAUSED = "paused after {} writes"


def main(kubeconfig: str, namespace: str, writes_before_pause: int) -> None:
    real_apply = KubeClient.apply
    writes = 0

    def apply(
        self: KubeClient, obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        nonlocal writes
        result = real_apply(self, obj, current=current, dry_run=dry_run)
        if not dry_run:
            writes += 1
            if writes >= writes_before_pause:
                print(PAUSED.format(writes), flush=True)
                time.sleep(3600)
        return result

    KubeClient.apply = apply  # type: ignore[method-assign]
    run_operator(
        OperatorConfig(
            namespaces=(namespace,),
            kubeconfig=kubeconfig,
            metrics_port=0,
            health_port=0,
            read_triton_pods=False,
            read_routers=False,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
