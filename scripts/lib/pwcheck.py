"""Shared helpers for the pinwatch cross-check scripts (check-ja4, check-tshark).

Finds the capture files to check, unpacks gzip captures to a temporary file,
runs `pinwatch replay PCAP --connections -` and parses its JSON lines, and
prints the per-file tables and the final tally.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SCRIPT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = SCRIPT_DIR.parent
# The public corpus kept in the repository (sources and licences in its MANIFEST.md).
CORPUS_DIR = REPO_ROOT / "tests" / "corpus" / "public"
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "pinwatch"

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")

# Files in the corpus that are damaged on purpose: a reader is expected to
# stop early (or resync) rather than read them completely.
KNOWN_DAMAGED = ("tls_DER-incomplete-header.pcap",)

# ---------------------------------------------------------------- arguments


def die(msg: str) -> None:
    """Usage or setup error: message on stderr, exit status 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def is_capture(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in CAPTURE_SUFFIXES)


def find_captures(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and is_capture(p))


def default_captures() -> list[Path]:
    return find_captures(REPO_ROOT / "captures") + find_captures(CORPUS_DIR)


def parse_args(argv: list[str], usage: str) -> tuple[Path, list[Path]]:
    """`[PINWATCH_BIN] PCAP...` -> (binary, captures)."""
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        sys.exit(0)
    binary = DEFAULT_BIN
    if args and not is_capture(Path(args[0])):
        binary = Path(args.pop(0))
    pcaps = [Path(a) for a in args] if args else default_captures()
    for p in pcaps:
        if not p.is_file():
            die(f"no such capture file: {p}")
    if not pcaps:
        die(f"no capture files given and none found in captures/ or {CORPUS_DIR}")
    return binary, pcaps


def check_binary(binary: Path) -> None:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        die(
            f"pinwatch binary {binary} not found or not executable "
            "(build it with `cargo build --release`, or pass its path first)"
        )


def display_name(path: Path) -> str:
    for base in (CORPUS_DIR, REPO_ROOT):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


@contextmanager
def readable_capture(path: Path) -> Iterator[Path]:
    """Yield a path both tools can read: gzip captures are unpacked to a temp file."""
    if path.name.lower().endswith(".gz"):
        tmpdir = tempfile.mkdtemp(prefix="pwcheck-")
        try:
            out = Path(tmpdir) / path.name[: -len(".gz")]
            with gzip.open(path, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            yield out
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    else:
        yield path


def known_damaged(path: Path) -> bool:
    return path.name in KNOWN_DAMAGED


# ------------------------------------------------------------ connections


def norm_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(str(ip).strip("[]")))
    except ValueError:
        return str(ip)


def tuple_key(cip, cport, sip, sport) -> tuple:
    return (norm_ip(cip), int(cport), norm_ip(sip), int(sport))


def fmt_tuple(t: tuple) -> str:
    def ep(ip, port):
        return f"[{ip}]:{port}" if ip and ":" in ip else f"{ip}:{port}"

    return f"{ep(t[0], t[1])} -> {ep(t[2], t[3])}"


@dataclass
class PinwatchRun:
    records: list[dict] = field(default_factory=list)
    returncode: int = 0
    stderr: str = ""
    bad_lines: list[str] = field(default_factory=list)
    crashed: bool = False

    def by_tuple(self) -> dict[tuple, list[dict]]:
        out: dict[tuple, list[dict]] = {}
        for r in self.records:
            try:
                k = tuple_key(r["client_ip"], r["client_port"], r["server_ip"], r["server_port"])
            except (KeyError, TypeError, ValueError):
                continue
            out.setdefault(k, []).append(r)
        return out


def run_pinwatch(binary: Path, pcap: Path, timeout: int = 300) -> PinwatchRun:
    cmd = [str(binary), "replay", str(pcap), "--connections", "-"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return PinwatchRun(returncode=-1, stderr=f"timed out after {timeout}s", crashed=True)
    run = PinwatchRun(returncode=p.returncode, stderr=p.stderr)
    # A signal, or Rust's panic exit code, is a crash; any other non-zero exit
    # is a reported error (acceptable for a damaged file).
    run.crashed = p.returncode < 0 or p.returncode == 101 or "panicked at" in p.stderr
    for line in p.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            run.bad_lines.append(line)
            continue
        if isinstance(obj, dict):
            run.records.append(obj)
        else:
            run.bad_lines.append(line)
    return run


# ----------------------------------------------------------------- output


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.files_failed: list[str] = []

    def finish(self) -> int:
        print()
        if self.files_failed:
            print("files with failures: " + ", ".join(self.files_failed))
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def print_table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> None:
    if not rows:
        print(f"{indent}(no connections)")
        return
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    line = indent + "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))
    print(line.rstrip())
    for r in cells:
        print((indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r))).rstrip())


def short_err(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
