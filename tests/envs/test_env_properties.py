"""Property test: the env's constructor, reset and step on random valid and invalid inputs.

Whatever a caller passes, the env either works or raises ValueError/TypeError (ResetNeeded only where
no episode is live), and never hangs: every example runs under an alarm.
"""

import contextlib
import signal
import threading

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from envs.colliding_agents_v0 import NUM_ACTIONS, ResetNeeded, parallel_env

# Values of the wrong type or range for any argument, mixed into every strategy below.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(-3, 3), max_size=3),
    st.sampled_from([np.int64(3), np.float32(2.0), np.array([1, 2]), (), {}, object()]),
)


def mostly(valid, invalid, one_in: int = 10):
    """``invalid`` once in ``one_in`` draws, else ``valid``: most examples get far enough to step."""
    return st.integers(1, one_in).flatmap(lambda k: invalid if k == 1 else valid)


bad_count = st.one_of(
    st.integers(-3, 0),
    st.tuples(st.integers(-3, 12), st.integers(-3, 12)),
    st.sampled_from([88059, (1, 88059), 10**12]),  # refused by the memory guard, never allocated
    junk,
)
constructor_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "num_agents": mostly(
            st.one_of(st.integers(1, 12), st.tuples(st.integers(1, 4), st.integers(4, 9))), bad_count
        ),
        "grid_size": mostly(st.integers(5, 60), st.one_of(st.integers(-2, 4), junk)),
        "radius": mostly(st.integers(0, 3), st.one_of(st.integers(-2, 40), junk)),
        "scenario": mostly(
            st.sampled_from(["pairwise", "predator_prey", "alliances"]), st.one_of(st.just("nope"), junk)
        ),
        "max_cycles": mostly(st.integers(1, 6), st.one_of(st.integers(-1, 0), junk)),
        "pad_agents": mostly(st.booleans(), junk),
        "flatten": mostly(st.booleans(), junk),
        "memory_limit_gb": mostly(
            st.sampled_from([None, 4.0, 0.5]), st.one_of(st.sampled_from([1e-9, -1.0]), junk)
        ),
    },
)
actions = mostly(st.integers(0, NUM_ACTIONS - 1), st.one_of(st.integers(-2, NUM_ACTIONS + 1), junk), 40)


@contextlib.contextmanager
def alarm(seconds: int):
    """Fail (instead of hanging the suite) if the body runs longer than ``seconds``."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _timeout(signum, frame):
        raise AssertionError(f"env call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kwargs=constructor_kwargs,
    seed=mostly(st.one_of(st.none(), st.integers(0, 2**32)), st.one_of(st.integers(-5, -1), junk)),
    steps=st.lists(
        st.one_of(
            st.lists(actions, min_size=12, max_size=12),  # one action per live agent, in order
            st.dictionaries(st.sampled_from([f"agent_{i}" for i in range(8)] + ["x"]), actions, max_size=9),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_env_only_raises_value_or_type_errors(kwargs, seed, steps):
    with alarm(30):
        try:
            env = parallel_env(**kwargs)
        except (ValueError, TypeError) as e:
            event(f"constructor: {type(e).__name__}")
            return
        event("constructed")
        try:
            env.reset(seed=seed)
        except (ValueError, TypeError):
            env.reset(seed=0)
        for acts in steps:
            if isinstance(acts, list):
                acts = dict(zip(env.agents, acts, strict=False))
            try:
                _, rewards, _, truncations, _ = env.step(acts)
            except (ValueError, TypeError):
                continue
            except ResetNeeded:
                assert not env.agents  # only once the episode is over
                env.reset(seed=1)
                continue
            event("stepped")
            # A step that went through was fully valid: every live agent got a legal int action.
            assert set(rewards) == set(truncations)
            assert all(np.isfinite(r) for r in rewards.values())
