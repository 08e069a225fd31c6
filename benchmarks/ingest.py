"""Ingest benchmark: `dialer check`'s code path against a naive pandas + phonenumbers loop.

    .venv/bin/python benchmarks/ingest.py                 # 1M CSV rows, 100k XLSX rows
    .venv/bin/python benchmarks/ingest.py --rows 100000   # a quick check (XLSX: rows / 10)

Writes a CSV and an XLSX of realistic mixed numbers (several countries and
formats, some invalid, some premium-rate, some duplicates written differently)
to a temp folder, then times each job in a fresh process (its own imports,
caches and peak memory; the job's modules are imported before the clock starts):

- ours:     campaign.contacts.validate_sheet (read + columns + policy + dedupe), as
            `dialer check` runs it
- ours + contacts built: the same, then every accepted `ParsedContact` built (what
            `dialer import` and `dialer check --format json` go on to do)
- baseline: pandas.read_csv(dtype=str) + per row parse / is_valid_number / format_number
- Excel:    campaign.contacts.read_sheet (the sheet's XML streamed, bounded by the cells
            that hold data) vs pandas.read_excel(engine="openpyxl"); and ours once more on
            the same sheet with one stray cell at XFD1048576 (a reader that builds the
            sheet's stated grid needs 549 GB for it)

Each job reports wall time and CPU time (user + system, `os.times`): on a shared
machine the wall time moves with the load, the CPU time much less.

Both CSV paths must agree on every row's validity: the same number of rows with a
valid number (ours: accepted + duplicates + not-dialable types) and the same set of
distinct valid E.164 numbers (compared by digest, outside the timed part). The
script prints both and exits 1 if they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REGION = "US"
US_AREAS = [212, 213, 305, 312, 415, 469, 503, 602, 646, 702, 718, 805, 917]
FIRST = ["Ann", "Bob", "Cy", "Dee", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea"]
LAST = ["Lee", "Ray", "Young", "Smith", "Garcia", "Müller", "Dubois", "Rossi", "Khan", "Ng"]
CITIES = ["San Francisco", "New York", "London", "Berlin", "Paris", "Sydney", "Mumbai"]


def _us(rng: random.Random) -> str:
    area, mid, last = rng.choice(US_AREAS), rng.randint(200, 999), rng.randint(0, 9999)
    style = rng.randrange(6)
    if style == 0:
        return f"({area}) {mid}-{last:04d}"
    if style == 1:
        return f"{area}-{mid}-{last:04d}"
    if style == 2:
        return f"{area}.{mid}.{last:04d}"
    if style == 3:
        return f"+1 {area} {mid} {last:04d}"
    if style == 4:
        return f"1{area}{mid}{last:04d}"
    return f"{area}{mid}{last:04d}"


def _foreign(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"+44 7{rng.randint(400, 999)} {rng.randint(0, 999999):06d}"
    if kind == 1:
        return f"+44 20 {rng.randint(0, 9999):04d} {rng.randint(0, 9999):04d}"
    if kind == 2:
        return f"+49 30 {rng.randint(1000000, 99999999)}"
    if kind == 3:
        return f"+49 151 {rng.randint(10000000, 99999999)}"
    if kind == 4:
        return f"+33 6 {rng.randint(0, 99):02d} {rng.randint(0, 99):02d} {rng.randint(0, 9999):04d}"
    if kind == 5:
        return f"+52 55 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    if kind == 6:
        return f"011 61 4{rng.randint(0, 99999999):08d}"
    return f"+91 9{rng.randint(100000000, 999999999)}"


def _bad(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return ""
    if kind == 1:
        return rng.choice(["n/a", "unknown", "-", "TBD", "no phone"])
    if kind == 2:
        return str(rng.randint(100, 99999))  # too short
    if kind == 3:
        return f"1-900-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"  # premium rate
    if kind == 4:
        return f"({rng.choice([111, 999, 123])}) 555-{rng.randint(0, 9999):04d}"  # no such area
    return f"+{rng.randint(1, 99)} {rng.randint(10**11, 10**13)}"  # wrong length


def phone_numbers(count: int, seed: int = 20261125) -> list[str]:
    rng = random.Random(seed)
    numbers: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.06 and numbers:
            numbers.append(rng.choice(numbers))  # the same cell again
        elif roll < 0.09 and numbers:
            digits = "".join(ch for ch in rng.choice(numbers) if ch.isdigit())
            numbers.append("+" + digits if len(digits) > 10 else "+1" + digits)  # rewritten
        elif roll < 0.70:
            numbers.append(_us(rng))
        elif roll < 0.90:
            numbers.append(_foreign(rng))
        else:
            numbers.append(_bad(rng))
    return numbers


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("Name,Phone,Email,City\n")
        for index, phone in enumerate(phone_numbers(rows)):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.lower()}.{index}@example.com"
            handle.write(f'"{first} {last}","{phone}",{email},{rng.choice(CITIES)}\n')


def add_stray_cell(source: Path, target: Path, ref: str = "XFD1048576") -> None:
    """The same workbook with one more cell, far away (as a CRM export or a user's
    formatting leaves one)."""
    row = "".join(ch for ch in ref if ch.isdigit())
    cell = f'<row r="{row}"><c r="{ref}" t="inlineStr"><is><t>x</t></is></c></row>'
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data = data.replace(b"</sheetData>", cell.encode() + b"</sheetData>")
            new.writestr(item, data)


def write_xlsx(path: Path, rows: int) -> None:
    import openpyxl

    rng = random.Random(2)
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Leads")
    sheet.append(["Name", "Phone", "Email", "City"])
    for index, phone in enumerate(phone_numbers(rows, seed=7)):
        digits = "".join(ch for ch in phone if ch.isdigit())
        # Spreadsheets store many numbers as numbers: 4155552671, not "415-555-2671".
        cell: object = int(digits) if phone == digits and len(digits) == 10 else phone
        sheet.append([f"{rng.choice(FIRST)} {rng.choice(LAST)}", cell, f"u{index}@x.io", "SF"])
    workbook.save(path)


# --------------------------------------------------------------------------- measured work

#: what each job imports before its clock starts (the same libraries a caller has loaded)
PRELOAD = {
    # campaign.config: the settings (sheet limits) every caller of ours has loaded already
    "ours_check": ["campaign.contacts", "campaign.config"],
    "ours_check_built": ["campaign.contacts", "campaign.config"],
    "baseline_check": ["pandas", "phonenumbers"],
    "ours_read_excel": ["campaign.contacts", "campaign.config"],
    "pandas_read_excel": ["pandas", "openpyxl"],
}


def ours_check(path: str) -> tuple[dict[str, Any], list[str]]:
    from campaign.contacts import Reason, validate_sheet

    result = validate_sheet(path, region=REGION)
    not_dialable = [r.e164 for r in result.rejected if r.reason is Reason.NOT_DIALABLE_TYPE]
    valid = result.accepted.e164s() + [d.e164 for d in result.duplicates]
    valid += [e164 for e164 in not_dialable if e164]
    outcome = {
        "rows": result.rows,
        "accepted": len(result.accepted),
        "duplicates": len(result.duplicates),
        "not_dialable": len(not_dialable),
        "valid": len(result.accepted) + len(result.duplicates) + len(not_dialable),
    }
    return outcome, valid


def ours_check_built(path: str) -> tuple[dict[str, Any], list[str]]:
    from campaign.contacts import validate_sheet

    result = validate_sheet(path, region=REGION)
    built = [contact.e164 for contact in result.accepted]
    return {"rows": result.rows, "accepted": len(built)}, []


def baseline_check(path: str) -> tuple[dict[str, Any], list[str]]:
    import pandas as pd
    import phonenumbers

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    e164s = []
    for raw in frame["Phone"]:
        try:
            number = phonenumbers.parse(raw, REGION)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164s.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return {"rows": len(frame), "valid": len(e164s)}, e164s


def ours_read_excel(path: str) -> tuple[dict[str, Any], list[str]]:
    from campaign.contacts import read_sheet

    return {"rows": len(read_sheet(path))}, []


def pandas_read_excel(path: str) -> tuple[dict[str, Any], list[str]]:
    import pandas as pd

    return {"rows": len(pd.read_excel(path, engine="openpyxl", dtype=str))}, []


Job = Callable[[str], tuple[dict[str, Any], list[str]]]


def _child(job: Job, path: str, queue: Any) -> None:
    for module in PRELOAD[job.__name__]:
        importlib.import_module(module)
    before, started = os.times(), time.perf_counter()
    try:
        outcome, numbers = job(path)
    except Exception as exc:  # a refused sheet is a result to record, not a crash
        outcome, numbers = {"rows": 0, "error": f"{type(exc).__name__}: {exc}"}, []
    wall, after = time.perf_counter() - started, os.times()
    outcome["seconds"] = wall
    outcome["cpu"] = (after.user - before.user) + (after.system - before.system)
    outcome["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha256("\n".join(sorted(set(numbers))).encode()).hexdigest()
    outcome["distinct"], outcome["digest"] = len(set(numbers)), digest
    queue.put(outcome)


def measure(job: Job, path: Path) -> dict[str, Any]:
    """Run one job in a fresh process: its own imports, caches and peak memory."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(job, str(path), queue))
    process.start()
    outcome: dict[str, Any] = queue.get(timeout=3600)
    process.join(timeout=60)
    return outcome


def _load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def _times(outcome: dict[str, Any]) -> str:
    return f"{outcome['seconds']:7.2f}s wall {outcome['cpu']:7.2f}s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 1M)")
    parser.add_argument("--xlsx-rows", type=int, help="XLSX rows (default: rows / 10)")
    args = parser.parse_args()
    xlsx_rows = args.xlsx_rows if args.xlsx_rows is not None else max(1, args.rows // 10)
    print(f"{os.cpu_count()} CPUs, {_load()}")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as folder:
        csv_path, xlsx_path = Path(folder) / "leads.csv", Path(folder) / "leads.xlsx"
        stray_path = Path(folder) / "leads-stray.xlsx"
        started = time.perf_counter()
        write_csv(csv_path, args.rows)
        write_xlsx(xlsx_path, xlsx_rows)
        add_stray_cell(xlsx_path, stray_path)
        print(
            f"wrote {args.rows:,} CSV rows and {xlsx_rows:,} XLSX rows"
            f" in {time.perf_counter() - started:.1f}s"
        )

        ours = measure(ours_check, csv_path)
        built = measure(ours_check_built, csv_path)
        base = measure(baseline_check, csv_path)
        for label, outcome in (("ours", ours), ("ours + built", built), ("baseline", base)):
            if "error" in outcome:
                print(f"CSV  {label} refused the sheet: {outcome['error']}")
                sys.exit(1)
        print(
            f"CSV  ours           {_times(ours)}  peak {ours['peak_mib']:6.0f} MiB"
            f"  valid rows {ours['valid']:,} (accepted {ours['accepted']:,},"
            f" duplicates {ours['duplicates']:,}, not dialable {ours['not_dialable']:,})"
            f"  distinct valid numbers {ours['distinct']:,}"
        )
        print(
            f"CSV  ours + built   {_times(built)}  peak {built['peak_mib']:6.0f} MiB"
            f"  contacts built {built['accepted']:,}"
        )
        print(
            f"CSV  baseline       {_times(base)}  peak {base['peak_mib']:6.0f} MiB"
            f"  valid rows {base['valid']:,}"
            f"  distinct valid numbers {base['distinct']:,}"
        )
        print(
            f"CSV  speed-up {base['seconds'] / ours['seconds']:.2f}x wall,"
            f" {base['cpu'] / ours['cpu']:.2f}x CPU (target >= 3x);"
            f" with contacts built {base['seconds'] / built['seconds']:.2f}x wall,"
            f" {base['cpu'] / built['cpu']:.2f}x CPU"
        )

        ours_read = measure(ours_read_excel, xlsx_path)
        openpyxl_read = measure(pandas_read_excel, xlsx_path)
        stray_read = measure(ours_read_excel, stray_path)
        xlsx_check = measure(ours_check, xlsx_path)
        for label, outcome in (("ours", ours_read), ("openpyxl", openpyxl_read)):
            if "error" in outcome:
                print(f"XLSX read {label} refused: {outcome['error']}")
        print(
            f"XLSX read ours (streamed) {_times(ours_read)}  peak {ours_read['peak_mib']:.0f} MiB"
            f"  pandas/openpyxl {_times(openpyxl_read)}"
            f"  speed-up {openpyxl_read['seconds'] / ours_read['seconds']:.1f}x wall,"
            f" {openpyxl_read['cpu'] / ours_read['cpu']:.1f}x CPU (target >= 4x)"
        )
        print(
            f"XLSX read ours, + a stray cell at XFD1048576 {_times(stray_read)}"
            f"  peak {stray_read['peak_mib']:.0f} MiB  rows {stray_read['rows']:,}"
            + (f"  refused: {stray_read['error']}" if "error" in stray_read else "")
        )
        print(
            f"XLSX full check ours {_times(xlsx_check)}"
            f" ({xlsx_check['accepted']:,} accepted of {xlsx_check['rows']:,})"
        )
        print(
            f"peak memory, ours on {args.rows:,} CSV rows: {ours['peak_mib']:.0f} MiB"
            " (target < 2048 MiB)"
        )
        print(_load())
        same = (ours["rows"], ours["valid"], ours["digest"]) == (
            base["rows"],
            base["valid"],
            base["digest"],
        )
        if not same:
            print("MISMATCH: ours and the baseline disagree on which numbers are valid")
            sys.exit(1)
        print("ours and the baseline agree on every valid number")


if __name__ == "__main__":
    main()
