"""The gradio page of the slider app (``build_app``) and the page served when the app cannot start
(``build_error_app``).  All the work is in ``miro.app.core``; this module only lays out controls and turns the
core's results and ``AppError`` messages into what the page shows.

Generation and sweeps go through gradio's queue, one job at a time on the model (``concurrency_id="model"``),
with a progress bar per sampling step; Cancel stops the running job at its next step (its session's flag in
``AppState.cancels``), which then says "Cancelled." itself, and drops the session's requests still queued.
"""

import logging
import tempfile
import traceback
from pathlib import Path

from miro.app.config import GUIDANCE_MODES
from miro.app.core import (
    AppError,
    AppState,
    Cancelled,
    Form,
    display_images,
    error_page_html,
    generate,
    make_request,
    rewards_table_html,
    status_html,
    sweep,
    sweep_summary_html,
    sweep_targets,
    write_download,
)

log = logging.getLogger("miro.app")

CSS = """
.miro-status { padding: 0.5em 0.8em; border-radius: 6px; margin: 0.2em 0; }
.miro-info { background: #eef4ff; color: #1d3b72; }
.miro-ok { background: #eefaf0; color: #1e5a2a; }
.miro-error { background: #fdecec; color: #8a1c1c; font-weight: 600; }
.miro-error-page { max-width: 60em; margin: 3em auto; }
.miro-error-page pre { white-space: pre-wrap; background: #fdecec; color: #8a1c1c; padding: 1em; border-radius: 6px; }
table.miro-rewards, table.miro-sweep { border-collapse: collapse; font-size: 0.9em; margin-top: 0.5em; }
table.miro-rewards td, table.miro-rewards th, table.miro-sweep td, table.miro-sweep th {
  border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
table.miro-rewards tr.target, table.miro-rewards tr.mean { font-weight: 600; background: #f6f6f6; }
#gallery img, #sweep-grid img { image-rendering: pixelated; }
#gallery .grid-wrap.fixed-height { min-height: 0; }
"""

GUIDANCE_INFO = {
    "joint": "one scale w for text and rewards: (1 + w) v(c, s+) - w v(null, s-), 2 evaluations per step",
    "decoupled": "a text scale and a reward scale (the reward direction is measured with the prompt), 3 evaluations per step",
}
assert set(GUIDANCE_INFO) == set(GUIDANCE_MODES)


def _theme(gr):
    return gr.themes.Default(primary_hue="indigo")


def _header(state: AppState) -> str:
    import html

    pipe = state.pipe
    bins = f", {pipe.num_bins} reward levels in training" if pipe.num_bins else ""
    model = (
        "the shipped reference model <code>models/shapes_reference</code>" if state.cfg.pipeline is None
        else f"<code>{html.escape(state.pipeline)}</code>"
    )  # fmt: skip
    return (
        "<h1 style='margin-bottom:0.1em'>MIRO reward sliders</h1>"
        f"<p style='margin-top:0'>Model: {model}, {pipe.default_image_size} px, "
        f"rewards {', '.join(html.escape(n) for n in state.reward_names)}{bins}.  A slider is the reward's target in "
        "[0, 1] (0 = the lowest level seen in training, 1 = the highest); the images come with the rewards measured "
        f"on them ({', '.join(html.escape(n) for n in state.measurer.names)}).</p>"
    )


def build_app(state: AppState):
    """The slider page for the loaded pipeline of ``state``."""
    import gradio as gr

    from miro.contracts.rewards import REWARDS
    from miro.flow.solvers import METHODS

    cfg, names, start = state.cfg, state.reward_names, state.initial_form()
    joint = start.guidance_mode == "joint"

    with gr.Blocks(title="MIRO reward sliders", analytics_enabled=False) as demo:
        gr.HTML(_header(state), elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=340):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt", placeholder="a photo of a red circle")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Accordion("Reward targets", open=True):
                    targets = [
                        gr.Slider(0.0, 1.0, value=start.reward_targets[n], step=0.01, label=n, elem_id=f"target-{n}",
                                  info=REWARDS[n].summary if n in REWARDS else None)  # fmt: skip
                        for n in names
                    ]
                    free = gr.CheckboxGroup(names, value=start.free, label="Free rewards",
                                            info="not steered: the null token in both guidance branches, so the "
                                                 "model draws what the prompt alone implies for them",
                                            elem_id="free")  # fmt: skip
                with gr.Accordion("Negative targets (what guidance pushes away from)", open=False):
                    negatives = [
                        gr.Slider(0.0, 1.0, value=start.negative_reward_targets[n], step=0.01, label=n,
                                  elem_id=f"negative-{n}")  # fmt: skip
                        for n in names
                    ]
                with gr.Accordion("Guidance and sampling", open=True):
                    mode = gr.Radio(list(GUIDANCE_MODES), value=start.guidance_mode, label="Guidance mode",
                                    info=GUIDANCE_INFO[start.guidance_mode], elem_id="guidance-mode")  # fmt: skip
                    scale = gr.Slider(0.0, 15.0, value=start.guidance_scale, step=0.1, label="Guidance scale w",
                                      visible=joint, elem_id="guidance-scale")  # fmt: skip
                    text_scale = gr.Slider(0.0, 15.0, value=start.text_guidance_scale, step=0.1, label="Text guidance scale",
                                           visible=not joint, elem_id="text-guidance-scale")  # fmt: skip
                    reward_scale = gr.Slider(0.0, 15.0, value=start.reward_guidance_scale, step=0.1,
                                             label="Reward guidance scale", visible=not joint, elem_id="reward-guidance-scale")  # fmt: skip
                    steps = gr.Slider(1, cfg.max_steps, value=start.steps, step=1, label="Steps", elem_id="steps")
                    sampler = gr.Radio(list(METHODS), value=start.sampler, label="Sampler", elem_id="sampler",
                                       info="euler: 1 evaluation per branch and step; heun: 2")  # fmt: skip
                    with gr.Row():
                        seed = gr.Number(value=start.seed, precision=0, minimum=0, label="Seed (image k: seed + k)",
                                         elem_id="seed")  # fmt: skip
                        num_images = gr.Slider(1, cfg.max_images, value=start.num_images, step=1, label="Images",
                                               elem_id="num-images")  # fmt: skip
            with gr.Column(scale=3, min_width=400):
                with gr.Tabs():
                    with gr.Tab("Images", id="images-tab", elem_id="images-tab"):
                        status = gr.HTML(status_html("info", "Type a prompt, set the sliders, press Generate."),
                                         elem_id="status")  # fmt: skip
                        gallery = gr.Gallery(label="Images", columns=4, height="auto", object_fit="contain", format="png",
                                             interactive=False, buttons=["download", "fullscreen"],
                                             elem_id="gallery")  # fmt: skip
                        rewards = gr.HTML("", elem_id="rewards")
                        download = gr.File(label="Download: the images and their settings (JSON)", interactive=False,
                                           elem_id="download")  # fmt: skip
                        with gr.Accordion("Settings of these images (JSON)", open=False):
                            settings_json = gr.JSON(elem_id="settings-json")
                    with gr.Tab("Sweep", id="sweep-tab", elem_id="sweep-tab"):
                        gr.Markdown("One reward's target varies, the other rewards stay at their sliders; the images "
                                    "are measured and the measured value is plotted against the target.")  # fmt: skip
                        with gr.Row():
                            sweep_reward = gr.Dropdown(names, value=cfg.sweep.reward or names[0], label="Reward",
                                                       elem_id="sweep-reward")  # fmt: skip
                            sweep_low = gr.Number(value=cfg.sweep.low, minimum=0, maximum=1, label="From", elem_id="sweep-low")
                            sweep_high = gr.Number(value=cfg.sweep.high, minimum=0, maximum=1, label="To", elem_id="sweep-high")
                        with gr.Row():
                            sweep_num = gr.Slider(2, 11, value=cfg.sweep.num_targets, step=1, label="Targets",
                                                  elem_id="sweep-num")  # fmt: skip
                            sweep_seeds = gr.Slider(1, 8, value=cfg.sweep.num_seeds, step=1, label="Seeds",
                                                    elem_id="sweep-seeds")  # fmt: skip
                            plot_all = gr.Checkbox(False, label="Plot every measured reward", elem_id="sweep-all")
                        with gr.Row():
                            sweep_btn = gr.Button("Sweep", variant="primary", elem_id="sweep")
                            sweep_cancel = gr.Button("Cancel", variant="stop", elem_id="sweep-cancel")
                        sweep_status = gr.HTML(status_html("info", "Choose a reward and press Sweep."), elem_id="sweep-status")
                        sweep_plot = gr.Image(label="Measured against target", type="filepath", format="png",
                                              interactive=False, buttons=["download", "fullscreen"],
                                              elem_id="sweep-plot")  # fmt: skip
                        sweep_summary = gr.HTML("", elem_id="sweep-summary")
                        sweep_grid = gr.Image(label="Images: targets in rows, seeds in columns", type="pil", format="png",
                                              interactive=False, buttons=["download", "fullscreen"],
                                              elem_id="sweep-grid")  # fmt: skip
                        sweep_download = gr.File(label="Download: the sweep (images, sweep.json, plot)", interactive=False,
                                                 elem_id="sweep-download")  # fmt: skip

        form_inputs = {prompt, *targets, *negatives, free, mode, scale, text_scale, reward_scale, steps, sampler, seed,
                       num_images}

        def read_form(data: dict) -> Form:
            """The form from gradio's {component: value} (the inputs are passed as a set)."""
            return Form(
                data[prompt], {n: float(data[c]) for n, c in zip(names, targets)},
                {n: float(data[c]) for n, c in zip(names, negatives)}, data[mode], data[scale], data[text_scale],
                data[reward_scale], data[steps], data[sampler], data[seed], data[num_images], list(data[free] or []),
            )  # fmt: skip

        def on_mode(m):
            return (gr.update(visible=m == "joint"), gr.update(visible=m != "joint"), gr.update(visible=m != "joint"),
                    gr.update(info=GUIDANCE_INFO.get(m, "")))  # fmt: skip

        mode.change(on_mode, mode, [scale, text_scale, reward_scale, mode], queue=False)

        def run_job(request: gr.Request, progress, job):
            """Run ``job(on_step, flag)`` with the model lock and the session's cancel flag."""
            key = request.session_hash or "anonymous"
            flag = state.cancels.start(key)
            try:
                progress(0.0, desc="waiting for the model")
                with state.lock:
                    return job(lambda done, total: progress((done, total), desc="sampling", unit="steps"), flag)
            finally:
                state.cancels.finish(key, flag)

        def on_generate(data: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - gradio's idiom
            skip = [gr.skip()] * 4
            try:
                form = read_form(data)
                req = make_request(form, state.cfg.settings, state.cfg.max_images)
                index = state.next_index()
                gen = run_job(request, progress, lambda on_step, flag: generate(
                    state.pipe, req, state.measurer, state.pipeline, index, on_step, flag))  # fmt: skip
                path = write_download(gen, state.workdir / "downloads")
            except AppError as err:
                return [status_html("error", str(err)), *skip]
            except Cancelled as err:
                log.info("generation cancelled %s", err)
                return [status_html("info", "Cancelled."), *skip]
            except Exception as err:  # noqa: BLE001 - shown on the page, the traceback goes to the log
                log.error("generation failed:\n%s", traceback.format_exc())
                return [status_html("error", f"Generation failed: {type(err).__name__}: {err}"), *skip]
            shown = display_images(gen.images, state.cfg.display_size)
            captions = [f"seed {s}" for s in req.seeds]
            text = f"{len(gen.images)} images in {gen.seconds:.1f} s ({req.settings.steps} steps, {req.settings.sampler})."
            return [status_html("ok", text), list(zip(shown, captions)), rewards_table_html(gen), str(path),
                    gen.settings_json()]  # fmt: skip

        gen_outputs = [status, gallery, rewards, download, settings_json]
        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        gen_click = generate_btn.click(on_generate, form_inputs, gen_outputs, **model_queue)
        gen_submit = prompt.submit(on_generate, form_inputs, gen_outputs, **model_queue)

        def on_sweep(data: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            reward, low, high, num, seeds, every = (data[c] for c in sweep_inputs)
            skip = [gr.skip()] * 4
            try:
                form = read_form(data)
                tgts = sweep_targets(float(low), float(high), num)
                folder = Path(tempfile.mkdtemp(prefix="sweep_", dir=state.workdir))
                view = run_job(request, progress, lambda on_step, flag: sweep(
                    state.pipe, form, state.cfg.settings, state.measurer, reward, tgts, seeds, folder / "sweep",
                    plot_all=bool(every), pipeline=state.pipeline, on_step=on_step, cancel=flag))  # fmt: skip
            except AppError as err:
                return [status_html("error", str(err)), *skip]
            except Cancelled as err:
                log.info("sweep cancelled %s", err)
                return [status_html("info", "Cancelled."), *skip]
            except Exception as err:  # noqa: BLE001
                log.error("sweep failed:\n%s", traceback.format_exc())
                return [status_html("error", f"Sweep failed: {type(err).__name__}: {err}"), *skip]
            grid = display_images([view.grid], max(state.cfg.display_size * 2, view.grid.width))[0]
            text = f"Swept {view.reward} over {len(tgts)} targets x {int(seeds)} seeds."
            return [status_html("ok", text), str(view.plot), sweep_summary_html(view), grid, str(view.archive)]

        sweep_inputs = [sweep_reward, sweep_low, sweep_high, sweep_num, sweep_seeds, plot_all]
        sweep_click = sweep_btn.click(
            on_sweep, {*form_inputs, *sweep_inputs},
            [sweep_status, sweep_plot, sweep_summary, sweep_grid, sweep_download], **model_queue,
        )  # fmt: skip

        # Cancel has two paths.  A running job gets its session's flag and stops itself at its next sampling step,
        # returning "Cancelled." through its own outputs: gradio's task cancellation is not used on it, since the
        # page then races the cancelled event's closing message and could mark the outputs "Error" (seen in
        # headless chromium on a loaded CPU).  A request still waiting in the queue has no flag yet; for it the
        # handler bumps a counter whose change event drops the session's queued requests (gradio's ``cancels``).
        def on_cancel(request: gr.Request, bumps: int):
            if state.cancels.cancel(request.session_hash or "anonymous"):
                return status_html("info", "Cancelling: the job stops at its next step."), bumps
            return status_html("info", "Cancelled: nothing was running."), bumps + 1

        gen_queued, sweep_queued = gr.State(0), gr.State(0)
        cancel_btn.click(on_cancel, gen_queued, [status, gen_queued], queue=False)
        sweep_cancel.click(on_cancel, sweep_queued, [sweep_status, sweep_queued], queue=False)
        gen_queued.change(None, None, None, cancels=[gen_click, gen_submit], queue=False)
        sweep_queued.change(None, None, None, cancels=[sweep_click], queue=False)

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1)
    return demo


def build_error_app(title: str, message: str):
    """The page served when the app cannot start: what went wrong and how to start it right."""
    import gradio as gr

    with gr.Blocks(title="MIRO reward sliders: cannot start", analytics_enabled=False) as demo:
        gr.HTML(error_page_html(title, message), elem_id="error-page")
    return demo


def launch(demo, host: str, port: int, open_browser: bool = False) -> None:
    """Serve ``demo`` on ``host:port`` until interrupted (no share link, no server-side rendering, no telemetry)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    demo.launch(
        server_name=host, server_port=port, inbrowser=open_browser, share=False, show_error=False, ssr_mode=False,
        theme=_theme(__import__("gradio")), css=CSS, footer_links=[], quiet=False,
    )  # fmt: skip


def workdir() -> Path:
    """A folder for the downloads of this run of the app (removed when it exits)."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="miro_app_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
