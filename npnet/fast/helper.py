"""A helper process: worker k > 0 of workers.py, running its part of each batch.

Started by ``workers.HelperProcess`` as ``python -c "...main(fd)"``, with the socket ``fd`` to
the process that started it. It waits for messages and answers each:

    network  (key, pickled copy)     keep a FastNet over the copy, one worker, quiet
    forward  (key, state, part x)    take the state (network_state), run the part forward,
                                     trading BatchNorm's sums ("sums", "parts"); answer
                                     "output" with y, batch first
    backward (key, part of dL/dy)    run backward, trading sums; answer "grads" with every
                                     parameter's gradient and, if asked for, dL/dx

An error is answered with "error" and the exception, which the other side raises. It ends when
the socket closes (the other process stopped it, or ended).
"""

from __future__ import annotations

import pickle
import signal
import traceback
from multiprocessing.connection import Connection

import numpy as np

from .channel import Channel
from .layout import from_batch_last, to_batch_last
from .net import FastNet
from .workers import HelperExchange, remember, set_network_state, working_as


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the process that started it decides
    channel = Channel(Connection(fd))
    networks: dict = {}  # key -> (FastNet, its network's modules)
    try:
        while True:
            kind, fields, arrays = channel.recv()
            try:
                answer = handle(kind, fields, arrays, networks, channel)
            except (EOFError, OSError):
                raise  # the other process has gone, or stopped this one mid-pass
            except Exception as error:  # noqa: BLE001 - handed to the other process
                channel.send("error", error=_picklable(error))
                continue
            if answer is not None:
                answer_kind, answer_arrays = answer
                channel.send(answer_kind, answer_arrays)
    except (EOFError, OSError):
        return  # quietly: the other process has said (or will say) what happened
    finally:
        channel.close()  # removes this side's file in shared memory, if still named


def handle(kind: str, fields: dict, arrays: dict, networks: dict, channel: Channel):
    if kind == "network":
        fast = FastNet(pickle.loads(fields["network"]), fields["input_grad"], workers=1,
                       _quiet=True)
        remember(networks, fields["key"], (fast, list(fast.net.modules())))
        return None
    fast, modules = networks[fields["key"]]
    exchange = HelperExchange(channel, fields["workers"])
    if kind == "forward":
        set_network_state(fast.net, fields["settings"], arrays, modules)
        x = arrays["x"]
        fast._chain.release()  # the last pass's caches (an evaluation pass has no backward)
        kernels = fast.plan(x)
        fast._plan_ahead(kernels, x)
        with working_as(exchange, fields["worker"]):
            y = fast._chain.forward(to_batch_last(x), kernels)
        return "output", {"y": np.ascontiguousarray(from_batch_last(y))}
    if kind == "backward":
        fast.net.zero_grad()
        with working_as(exchange, fields["worker"]):
            grad_x = fast._chain.backward(to_batch_last(arrays["grad"]))
        fast._chain.release()
        grads = {f"{i}": param.grad for i, param in enumerate(fast.net.parameters())}
        if grad_x is not None and fields["input_grad"]:
            grads["dL/dx"] = np.ascontiguousarray(from_batch_last(grad_x))
        return "grads", grads
    raise ValueError(f"npnet.fast helper: unknown message {kind!r}")


def _picklable(error: Exception) -> Exception:
    """The error itself, with where it happened in this process as a note, if it can be sent;
    else a RuntimeError with its text."""
    where = "".join(traceback.format_exception(error)[1:-1])
    try:
        error.add_note(f"(raised in npnet's helper process, worker 1 or more:\n{where})")
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error} (raised in npnet's helper "
                            f"process:\n{where})")
