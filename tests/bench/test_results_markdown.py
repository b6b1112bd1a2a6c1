"""The RESULTS.md section that bench/run_all.py records: machine line and one table per benchmark."""

from bench import results_markdown

SUMMARY = {
    "machine": {"device_kind": "NVIDIA H200", "backend": "gpu", "devices": 1, "platform_version": "cuda 13000",
                "versions": {"jax": "0.11.2", "flax": "0.12.0"}, "host": "x86_64", "cpu_count": 16,
                "date": "2026-11-29"},
    "size": "paper",
    "train_step": {"configs/ytvos.py+bf16": {
        "batch_size": 32, "image_size": 256, "step_s": 0.0305, "clips_per_s": 1049.2,
        "parts": {"encoder": 0.02, "ven": 0.0, "sampler": 0.0, "loss": 0.0105}, "device_peak_gb": 41.5,
        "compiled_gb": 50.0, "tflops_per_step": 13.9, "achieved_tflops": 455.7, "mfu": 0.4608}},
    "propagation": [{"preset": "mer", "encoder": "trained", "size": "480x854", "frames": 60, "compile_s": 4.25,
                     "steady_fps": 120.5, "features_fps": 800.0, "propagation_fps": 141.8, "e2e_fps": 55.0,
                     "sequence": "blackswan", "peak_rss_gb": 3.2, "device_peak_gb": None}],
    "input_pipeline": {"runs": [{"workers": 4, "batch_s": 0.1, "clips_per_s": 320.0}]},
}  # fmt: skip


def test_section_holds_the_machine_the_command_and_every_number():
    text = results_markdown.section(SUMMARY, "python bench/run_all.py --out=OUT")
    lines = text.splitlines()
    assert lines[0] == "## `bench/run_all.py` on NVIDIA H200 (2026-11-29)"
    assert "1 x NVIDIA H200 (backend gpu, cuda 13000)" in text and "jax 0.11.2, flax 0.12.0" in text
    assert "`python bench/run_all.py --out=OUT`" in text
    train_row = "| configs/ytvos.py+bf16 | 32 | 256 | 0.0305 | 1,049 | 0.02 | 0 | 0 | 0.0105 | 13.9 | 456 | 46.1% "
    train_row += "| 41.5 |"
    assert train_row in lines
    assert "| mer | trained | 480x854 | 60 | 4.25 | 120 | 800 | 142 | 55 (blackswan) | 3.2 | - |" in lines
    assert "| 4 | 0.1 | 320 |" in lines
    assert "VEN attention" not in text  # Absent from the summary, so no table.


def test_append_adds_the_section_after_a_blank_line(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n")
    results_markdown.append(str(path), "## new\n")
    assert path.read_text() == "# Benchmark results\n\n## new\n"
