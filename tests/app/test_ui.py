"""The gradio page, built in-process (no server, no browser): a slider per reward of the model, the controls the
browser test drives, and the page served instead of the app when the pipeline folder is bad."""

import pytest

from tests.app.conftest import WEIGHT_FREE, app_config

gr = pytest.importorskip("gradio", reason="the app's page needs gradio (scripts/test.sh installs it; docs/app.md)")


def _components(demo) -> dict:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_the_page_has_a_slider_per_reward_and_every_control(state):
    from miro.app.ui import build_app

    demo = build_app(state)
    found = _components(demo)
    start = state.pipe.recommended_reward_targets  # the reference model's clean-image medians, two rewards free
    for name in WEIGHT_FREE:
        target, negative = found[f"target-{name}"], found[f"negative-{name}"]
        value = 1.0 if start[name] is None else start[name]  # a free reward's slider waits at 1.0
        assert isinstance(target, gr.Slider) and (target.minimum, target.maximum, target.value) == (0.0, 1.0, value)
        assert negative.value == 0.0
    free = found["free"]
    assert isinstance(free, gr.CheckboxGroup) and [c[0] for c in free.choices] == WEIGHT_FREE
    assert free.value == ["colorfulness", "contrast"]  # the recommended nulls start ticked
    for elem in ("prompt", "generate", "cancel", "guidance-mode", "guidance-scale", "text-guidance-scale",
                 "reward-guidance-scale", "steps", "sampler", "seed", "num-images", "gallery", "rewards", "download",
                 "status", "sweep", "sweep-reward", "sweep-plot", "sweep-summary", "sweep-download"):  # fmt: skip
        assert elem in found, elem
    assert found["guidance-mode"].choices == [("joint", "joint"), ("decoupled", "decoupled")]
    assert found["sampler"].choices == [("euler", "euler"), ("heun", "heun"), ("sde", "sde")]
    assert found["guidance-scale"].visible is False and found["text-guidance-scale"].visible is True
    assert found["steps"].value == 4 and found["num-images"].maximum == 16
    # generation and sweeps share one queue slot on the model; Cancel is not queued behind them
    model = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    assert len(model) == 3 and all(fn.concurrency_limit == 1 for fn in model)
    names = {fn._id: fn.name for fn in demo.fns.values()}
    deps = demo.config["dependencies"]
    assert all(not d["cancels"] for d in deps if names[d["id"]] == "on_cancel")  # a running job stops itself
    assert all(d["queue"] is False for d in deps if names[d["id"]] == "on_cancel")
    # the requests still queued are dropped by gradio, from the change of a counter that on_cancel bumps
    cancels = [sorted(names[i] for i in d["cancels"]) for d in deps if d["cancels"]]
    assert sorted(cancels) == [["on_generate", "on_generate"], ["on_sweep"]]
    assert all(d["queue"] is False and d["targets"][0][1] == "change" for d in deps if d["cancels"])


def test_cancel_flags_the_running_job_or_drops_the_queued_ones(state):
    """on_cancel: with a job running in the session, its flag is set and the counter stays (no gradio cancel,
    so the job's own "Cancelled." reaches the page); with none, the counter moves (the queued requests drop)."""
    from miro.app.ui import build_app

    demo = build_app(state)
    on_cancel = _handler(demo, "on_cancel").fn
    request = type("Request", (), {"session_hash": "s1"})()
    flag = state.cancels.start("s1")
    shown, bumps = on_cancel(request, 3)
    assert flag.is_set() and bumps == 3 and "stops at its next step" in shown
    state.cancels.finish("s1", flag)
    shown, bumps = on_cancel(request, 3)
    assert bumps == 4 and "nothing was running" in shown


def test_a_bad_pipeline_folder_serves_a_page_that_says_so(tmp_path, monkeypatch, capsys):
    """``python -m miro.app pipeline=<bad folder>`` starts, and its page shows what is wrong: no traceback."""
    import miro.app.ui as ui
    from miro.app.cli import run

    served = {}
    monkeypatch.setattr(ui, "launch", lambda demo, host, port, open_browser=False: served.update(demo=demo, host=host))
    run(app_config(pipeline=str(tmp_path)))
    page = [b.value for b in served["demo"].blocks.values() if isinstance(b, gr.HTML)]
    assert served["host"] == "127.0.0.1" and len(page) == 1
    assert "The app cannot start" in page[0] and "no model_index.json" in page[0]
    assert "python -m miro.app pipeline=&lt;folder&gt;" in page[0]
    assert "warning: the app cannot start" in capsys.readouterr().err


class _FailingPipe:
    """A pipeline that breaks inside sampling (what a real failure deep in a model looks like to the page)."""

    reward_names = WEIGHT_FREE
    num_bins = 64
    default_image_size = 32

    def __init__(self, error):
        self.error = error

    def __call__(self, *args, **kwargs):
        raise self.error


def _handler(demo, name):
    return next(fn for fn in demo.fns.values() if fn.name == name)


@pytest.mark.parametrize(("prompt", "error", "shown"), [
    ("a red circle", RuntimeError("boom"), "Generation failed: RuntimeError: boom"),
    ("a red circle", ValueError("height=33 and width=32 must be multiples of 4"), "height=33 and width=32 must be"),
    ("   ", RuntimeError("never called"), "The prompt is empty"),
])  # fmt: skip
def test_a_failing_generation_is_a_message_on_the_page(state, prompt, error, shown, caplog):
    """The page's Generate handler, called as gradio calls it: the failure becomes the status message (the
    traceback of an unexpected one goes to the log) and the images already shown stay."""
    from dataclasses import replace
    from types import SimpleNamespace

    from miro.app.ui import build_app

    demo = build_app(replace(state, pipe=_FailingPipe(error)))
    fn = _handler(demo, "on_generate")
    data = {c: c.value for c in fn.inputs}
    data[next(c for c in fn.inputs if c.elem_id == "prompt")] = prompt
    status, *rest = fn.fn(data, request=SimpleNamespace(session_hash="s"), progress=lambda *a, **k: None)
    assert 'data-kind="error"' in status and shown in status, status
    assert all(isinstance(r, type(gr.skip())) for r in rest)  # nothing else replaced
    if isinstance(error, RuntimeError) and prompt.strip():
        assert "Traceback" in caplog.text and "boom" in caplog.text
