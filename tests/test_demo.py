"""`atalaia demo` end to end: a real subprocess, its /metrics scraped over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _statuses(text: str) -> dict[tuple[str, str], str]:
    """(detector, target) → status, from the atalaia_finding_status state set."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "atalaia_finding_status":
            for s in fam.samples:
                if s.value == 1:
                    out[(s.labels["detector"], s.labels["target"])] = s.labels["atalaia_finding_status"]
    return out


@pytest.mark.e2e
def test_demo_flags_exactly_the_planted_features_within_a_minute(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "demo.out"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "demo", "--dir", str(tmp_path / "demo"),
                                 "--listen", f"127.0.0.1:{port}"], stdout=fh, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        statuses: dict[tuple[str, str], str] = {}
        while time.monotonic() - t0 < 60:
            assert proc.poll() is None, out.read_text()
            try:
                statuses = _statuses(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.TransportError:
                statuses = {}
            if statuses:
                break
            time.sleep(0.5)
        assert statuses, f"no findings on /metrics within a minute:\n{out.read_text()}"
        printed = out.read_text()
        m = re.search(r"feature drift in (.+) from ", printed)
        assert m, printed
        planted = {f.strip() for f in m.group(1).split(",")}
        assert planted == {"income", "debt_to_income", "credit_score", "region"}

        cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["models"][0]
        features = set(cfg["features"]["numeric"]) | set(cfg["features"]["categorical"])
        flagged = {t for (d, t), s in statuses.items() if t in features and s in ("warn", "alert")}
        assert flagged == planted
        # every drift detector of the demo that scores a planted numeric feature alerts on it
        for det in {d["type"] for d in cfg["detectors"]}:
            for feature in ("income", "debt_to_income", "credit_score"):
                if (det, feature) in statuses:
                    assert statuses[(det, feature)] == "alert", (det, feature)
        # unplanted features are scored, and ok under every detector
        quiet = {t for (d, t), s in statuses.items() if t in features - planted}
        assert quiet == features - planted
        assert {(d, t): s for (d, t), s in statuses.items() if t in quiet and s != "ok"} == {}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
