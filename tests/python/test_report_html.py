"""report.html escapes every value that comes from the study's folder (spec.json, environment.json,
sensors.json, the tables): a study folder is data, and anyone who can write one (a shared results
folder, a Slurm node) must not be able to put markup or a script into the page others open."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from greenprobe.study.report import write_report

EVIL = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


def _folder(tmp_path, task: str):
    out = tmp_path / task
    out.mkdir()
    spec = {k: EVIL for k in ("profile", "image_size", "seq_len", "size", "runs", "min_run_s", "min_inferences",
                              "order", "rest_s", "baseline_s", "prompt_tokens", "output_tokens")}
    (out / "spec.json").write_text(json.dumps({**spec, "task": task}))
    (out / "environment.json").write_text(json.dumps({"greenprobe": EVIL, "platform": EVIL}))
    (out / "sensors.json").write_text(json.dumps([{"sensor": EVIL, "domain": EVIL, "quantity": EVIL,
                                                   "update_period_ns": 1e6, "update_period_source": EVIL,
                                                   "estimated": EVIL}]))
    pq.write_table(pa.table({"id": [EVIL], "status": [EVIL], "error": [EVIL], "reason": [EVIL], "fix": [EVIL]}),
                   out / "summary.parquet")
    return out


@pytest.mark.parametrize("task", ["classify", "generate"])
def test_every_value_from_the_folder_is_escaped(tmp_path, task):
    text = write_report(_folder(tmp_path, task)).read_text()
    assert "<script" not in text
    assert ESCAPED in text
    if task == "classify":  # the opening paragraph, the sensors table and the rows not measured
        assert text.count(ESCAPED) >= 10 + 6 + 3
        assert f"images {ESCAPED} px, text {ESCAPED} tokens" in text
    else:
        assert f"Prompts of {ESCAPED} tokens, {ESCAPED} output tokens" in text


def test_the_page_is_whole_and_its_own_markup_stays_markup(tmp_path):
    text = write_report(_folder(tmp_path, "classify")).read_text()
    assert text.startswith("<!doctype html><html><head><meta charset='utf-8'><title>greenprobe study</title>")
    assert text.rstrip().endswith("</body></html>")
    assert "<h2>Sensors</h2><table><thead><tr><th>sensor</th>" in text and "<h2>Not measured</h2>" in text
    assert "<p><b>What the figures mean.</b>" in text
