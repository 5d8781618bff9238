"""
The one slot for an agent's flow in progress: which flow may act, which waits, which
gives way.

  - a flow that moves the service (waking, draining, scaling down) holds the slot alone;
    a second one waits its turn (a wake asked for during a scale-down starts after it);
  - a flow that only observes (re-reading Swarm, probing a task that runs again) takes
    the slot only when no moving flow holds it, and gives way to one that comes: its
    L{Flow} goes stale, and it stops at its next step without touching anything.
"""

from __future__ import annotations

from enum import Enum

from twisted.internet.defer import Deferred, succeed


class FlowKind(Enum):
    """
    What the flow holding the slot is doing.
    """

    WAKING = "waking"
    DRAINING = "draining"
    SCALING_DOWN = "scaling_down"
    RECHECKING = "rechecking"
    RECOVERING = "recovering"


#: Flows that move the service, or are about to: they hold the slot one at a time.
MOVING = frozenset({FlowKind.WAKING, FlowKind.DRAINING, FlowKind.SCALING_DOWN})


class Flow:
    """
    The right to act of the flow that holds the slot: C{active} while it still does.
    """

    __slots__ = ("kind", "_slot")

    def __init__(self, slot: FlowSlot, kind: FlowKind) -> None:
        self._slot = slot
        self.kind = kind

    @property
    def active(self) -> bool:
        return self._slot._flow is self and not self._slot._stopped

    def become(self, kind: FlowKind) -> None:
        """
        Go on as another kind of flow without giving the slot up (a drain that ends in a
        scale-down).
        """
        self.kind = kind


class FlowSlot:
    """
    One agent's flow slot.
    """

    def __init__(self) -> None:
        self._flow: Flow | None = None
        self._queued: list[tuple[FlowKind, Deferred]] = []
        self._stopped = False

    def stop(self) -> None:
        """
        No flow acts any more; those waiting for the slot are cancelled.
        """
        self._stopped = True
        self._flow = None
        queued, self._queued = self._queued, []
        for _, waiting in queued:
            waiting.cancel()

    @property
    def flow(self) -> FlowKind | None:
        """
        What the flow holding the slot does, or C{None}.
        """
        return None if self._flow is None else self._flow.kind

    @property
    def moving(self) -> bool:
        """
        Whether a flow that moves the service holds the slot or waits for it.
        """
        return bool(self._queued) or (self._flow is not None and self._flow.kind in MOVING)

    def try_begin(self, kind: FlowKind) -> Flow | None:
        """
        Take the slot for an observing flow, or C{None} if a moving flow holds it (or
        waits for it) or one of the same kind runs. Another observing flow gives way.
        """
        if kind in MOVING:
            raise ValueError(f"{kind} moves the service: acquire the slot instead")
        if self._stopped or self.moving or self.flow is kind:
            return None
        self._flow = Flow(self, kind)
        return self._flow

    def acquire(self, kind: FlowKind) -> Deferred:
        """
        Take the slot for a moving flow: at once (an observing flow gives way), or when
        the moving flow holding it ends. Fires with the L{Flow}.
        """
        if kind not in MOVING:
            raise ValueError(f"{kind} only observes: try_begin instead")
        if self._flow is None or self._flow.kind not in MOVING:
            self._flow = Flow(self, kind)
            return succeed(self._flow)
        waiting: Deferred = Deferred(lambda d: self._forget_queued(d))
        self._queued.append((kind, waiting))
        return waiting

    def end(self, flow: Flow) -> None:
        """
        The flow is done: free the slot for the next moving flow waiting, if any.
        """
        if self._flow is not flow:
            return
        self._flow = None
        if self._queued and not self._stopped:
            kind, waiting = self._queued.pop(0)
            self._flow = Flow(self, kind)
            waiting.callback(self._flow)

    def _forget_queued(self, waiting: Deferred) -> None:
        self._queued = [(kind, d) for kind, d in self._queued if d is not waiting]
