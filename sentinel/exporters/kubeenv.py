"""What Sentinel needs to know of Kubernetes before, or just after, the workload is
spawned: standard library only (``os``), so that ``sentinel run`` pays no more than a
module's load for it. ``sentinel.exporters.k8s`` (discovery, the client) re-exports
``absolute_kubeconfig_env``; it imports ``event_bodies`` and through it the core's
state, about 13 ms, which is too much for that moment.
"""

from __future__ import annotations

import os


def absolute_kubeconfig_env(environ=None, cwd: str | None = None) -> None:
    """Make the relative entries of ``$KUBECONFIG`` absolute, in place, against ``cwd``
    (default: the current directory).

    Call it before Sentinel moves to ``/``: kubectl reads a relative entry from
    the directory it was started in, and so must Sentinel, which reads
    ``$KUBECONFIG`` only once the workload runs.
    """
    env = os.environ if environ is None else environ
    value = env.get("KUBECONFIG")
    if not value:
        return
    base = os.getcwd() if cwd is None else cwd
    parts = [p if not p or os.path.isabs(p) else os.path.join(base, p)
             for p in value.split(os.pathsep)]
    env["KUBECONFIG"] = os.pathsep.join(parts)


def events_may_post(k8s_events: str, kubeconfig: str | None, environ=None) -> bool:
    """Whether ``--k8s-events`` (``"auto"``, ``"on"``, ``"off"``) may load the kubernetes
    client in this process, for ``--max-rss auto``'s allowance for Sentinel's own
    memory. ``off``: never; ``on``: yes; ``auto``: when a cluster may be configured
    (``--kubeconfig``, an existing ``$KUBECONFIG`` file, ``KUBERNETES_SERVICE_HOST``,
    or ``~/.kube/config`` when ``$KUBECONFIG`` is unset). A superset of
    ``sentinel.exporters.k8s.find_cluster``'s answer (no token or pod check, no YAML):
    when unsure it says yes, which only lowers the limit by the client's share."""
    if k8s_events == "off":
        return False
    if k8s_events != "auto":
        return True
    env = os.environ if environ is None else environ
    if kubeconfig or env.get("KUBERNETES_SERVICE_HOST"):
        return True
    from_env = env.get("KUBECONFIG")
    if from_env:
        return any(p and os.path.isfile(p) for p in from_env.split(os.pathsep))
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.isfile(os.path.join(home, ".kube", "config"))
