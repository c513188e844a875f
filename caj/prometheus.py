"""A Prometheus for services outside Docker (`make up`, the tests): the
project's deploy/prometheus/prometheus.yml with the scrape targets and the
rule files made to fit, so that what runs locally is what Docker runs."""

import shutil
from pathlib import Path
from typing import Any

import yaml

from shared.settings import REPO_ROOT

CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"


def binary() -> str | None:
    """Debian's prometheus (apt-get install prometheus), if installed."""
    return shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


def local_config(targets: dict[str, str], *, scrape_interval: str | None = None,
                 leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The project's config scraping `targets` (job name -> host:port) instead
    of Docker's hosts, its rule files by absolute path. Jobs in `leave_out`
    are dropped, by name, for a setup that does not run them."""
    config = yaml.safe_load(CONFIG.read_text())
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] not in leave_out]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if set(targets) != jobs:
        raise ValueError(f"targets for {sorted(targets)}, but the config scrapes {sorted(jobs)}")
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["rule_files"] = [str(CONFIG.parent / pattern) for pattern in config.get("rule_files", [])]
    if scrape_interval:
        config["global"] |= {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    return config


def command(config_file: Path, data_dir: Path, listen: str) -> list[str]:
    prometheus = binary()
    if prometheus is None:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    return [prometheus, f"--config.file={config_file}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={listen}"]
