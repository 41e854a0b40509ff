"""The tools the comparisons need (GNU parallel, hyperfine) and the machine the figures come from."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess

import psutil


def ensure_tools(install: bool, log) -> tuple[dict[str, str | None], list[str]]:
    """Find GNU parallel and hyperfine; install them with apt-get (as root) when missing."""
    notes = []
    wanted = {"parallel": "parallel", "hyperfine": "hyperfine"}
    found = {t: shutil.which(t) for t in wanted}
    missing = [t for t, p in found.items() if p is None]
    if missing and install:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"installing {' '.join(missing)} with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            ok = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True).returncode == 0
            ok = ok and subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True).returncode == 0
            if not ok:
                notes.append(f"`apt-get install -y {' '.join(missing)}` failed.")
        else:
            notes.append(f"{' and '.join(missing)} missing and not root (or no apt-get): not installed.")
        found = {t: shutil.which(t) for t in wanted}
    if found["parallel"]:
        r = subprocess.run([found["parallel"], "--version"], capture_output=True, text=True)
        if "GNU parallel" not in r.stdout:
            notes.append("`parallel` on PATH is not GNU parallel (moreutils?): its comparisons are skipped.")
            found["parallel"] = None
    for t, p in found.items():
        if p is None:
            skipped = {
                "parallel": "the GNU parallel columns of workloads 1–3",
                "hyperfine": "hyperfine for workload 3 (timed by this script instead)",
            }[t]
            notes.append(f"{t} is not available: skipped {skipped}.")
            log(f"warning: {t} is not available: skipped {skipped}")
    return found, notes


def machine_info(tools: dict) -> list[list[str]]:
    vm = psutil.virtual_memory()

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"

    cpu = "n/a"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import yaml

        libyaml = "yes" if getattr(yaml, "CSafeLoader", None) else "no"
    except ImportError:
        libyaml = "n/a"
    return [
        ["date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")],
        ["cores", f"{os.cpu_count()} ({cpu})"],
        ["memory", f"{vm.total / 2**30:.1f} GiB"],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", f"{platform.python_version()} ({platform.python_implementation()}), libyaml: {libyaml}"],
        ["GNU parallel", version([tools["parallel"], "--version"]) if tools.get("parallel") else "not available"],
        ["hyperfine", version([tools["hyperfine"], "--version"]) if tools.get("hyperfine") else "not available"],
        ["xargs", version(["xargs", "--version"])],
        ["load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())],
    ]
