"""Convert a CityLearn 2.1.2 data set to the file format CityLearn 3.0.2 reads (run once, at packaging time).

CityLearn 3.0.2 ships no data (it downloads data sets at run time, which sparta never does). The
``citylearn==2.1.2`` wheel bundles them in the older format: 2.1.2 reads CSV columns by position, 3.0.2 by
name. This module renames what differs and writes xz-compressed CSVs, which pandas (and so CityLearn) reads
directly, so the converted set is loaded by its schema path with nothing unpacked or copied to a cache::

    pip download --no-deps citylearn==2.1.2 -d /tmp/cl && \\
    python -m sparta.grid.convert /tmp/cl/CityLearn-2.1.2-py3-none-any.whl citylearn_challenge_2022_phase_all OUT

The renames: CSV headers become the snake_case constructor names of 3.0.2 (``month``, ``non_shiftable_load``,
``carbon_intensity``, …); forecasts ``*_predicted_6h/12h/24h`` become ``*_predicted_1/2/3`` in CSVs and schema;
a single ``indoor_dry_bulb_temperature_set_point`` column (2022 sets have none) is split into the cooling and
heating set points. sparta ships the result for ``citylearn_challenge_2022_phase_all`` in
``sparta/grid/data`` with CityLearn's MIT licence notice.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import re
import sys
import zipfile
from pathlib import Path

# column order in which CityLearn 2.1.2 reads each file (its constructors' positional parameters)
BUILDING_COLUMNS = ("month", "hour", "day_type", "daylight_savings_status", "indoor_dry_bulb_temperature",
                    "average_unmet_cooling_setpoint_difference", "indoor_relative_humidity", "non_shiftable_load",
                    "dhw_demand", "cooling_demand", "heating_demand", "solar_generation", "occupant_count",
                    "indoor_dry_bulb_temperature_set_point", "hvac_mode", "power_outage")
WEATHER_COLUMNS = ("outdoor_dry_bulb_temperature", "outdoor_relative_humidity", "diffuse_solar_irradiance",
                   "direct_solar_irradiance",
                   *(f"{v}_predicted_{k}" for v in ("outdoor_dry_bulb_temperature", "outdoor_relative_humidity",
                                                    "diffuse_solar_irradiance", "direct_solar_irradiance")
                     for k in (1, 2, 3)))
PRICING_COLUMNS = ("electricity_pricing", *(f"electricity_pricing_predicted_{k}" for k in (1, 2, 3)))
CARBON_COLUMNS = ("carbon_intensity",)
HORIZONS = {"6h": "1", "12h": "2", "24h": "3"}


def rename_forecast(name: str) -> str:
    """``x_predicted_6h`` → ``x_predicted_1`` (12h → 2, 24h → 3); other names unchanged."""
    return re.sub(r"_predicted_(6h|12h|24h)$", lambda m: "_predicted_" + HORIZONS[m.group(1)], name)


def convert_csv(text: str, columns: tuple[str, ...]) -> str:
    """Replace the header of a 2.1.2 CSV by the 3.0.2 names of its columns (taken in 2.1.2's positional order);
    a set-point column is split into cooling and heating set points."""
    header, _, body = text.partition("\n")
    n = len(header.split(","))
    if n > len(columns):
        raise ValueError(f"expected at most {len(columns)} columns, got {n}: {header!r}")
    names = list(columns[:n])
    if "indoor_dry_bulb_temperature_set_point" in names:
        i = names.index("indoor_dry_bulb_temperature_set_point")
        names[i] = "indoor_dry_bulb_temperature_cooling_set_point"
        rows = [r.split(",") for r in body.splitlines() if r]
        names.insert(i + 1, "indoor_dry_bulb_temperature_heating_set_point")
        body = "\n".join(",".join([*r[:i + 1], r[i], *r[i + 1:]]) for r in rows) + "\n"
    return ",".join(names) + "\n" + body


def convert(wheel: str | Path, dataset: str, out: str | Path) -> Path:
    """Convert ``citylearn/data/<dataset>`` of a CityLearn 2.1.2 wheel into ``out`` (schema.json + ``*.csv.xz``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"citylearn/data/{dataset}/"
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(prefix)]
        if not names:
            raise ValueError(f"{wheel} has no data set {dataset!r}")
        schema = json.loads(z.read(prefix + "schema.json"))
        files: dict[str, tuple[str, ...]] = {}
        for b in schema["buildings"].values():
            files[b["energy_simulation"]] = BUILDING_COLUMNS
            files[b["weather"]] = WEATHER_COLUMNS
            for key, cols in (("carbon_intensity", CARBON_COLUMNS), ("pricing", PRICING_COLUMNS)):
                if b.get(key):
                    files[b[key]] = cols
        for name, cols in files.items():
            text = convert_csv(z.read(prefix + name).decode(), cols)
            with lzma.open(out / (name + ".xz"), "wt", preset=9 | lzma.PRESET_EXTREME) as f:
                f.write(text)
        for b in schema["buildings"].values():
            for key in ("energy_simulation", "weather", "carbon_intensity", "pricing"):
                if b.get(key):
                    b[key] = b[key] + ".xz"
        schema["observations"] = {rename_forecast(k): v for k, v in schema["observations"].items()}
        schema["root_directory"] = None
        (out / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        lic = next((n for n in z.namelist() if n.endswith(".dist-info/LICENSE")), None)
        if lic is not None:
            notice = ("The data in this folder comes from CityLearn 2.1.2 (citylearn/data/" + dataset + "), converted "
                      "by sparta.grid.convert\n(column names for CityLearn 3.0.2, CSVs xz-compressed). CityLearn's "
                      "licence:\n\n")
            (out / "LICENSE").write_text(notice + io.TextIOWrapper(io.BytesIO(z.read(lic))).read())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparta.grid.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", help="CityLearn-2.1.2-py3-none-any.whl")
    p.add_argument("dataset", help="data set name, e.g. citylearn_challenge_2022_phase_all")
    p.add_argument("out", help="output folder")
    a = p.parse_args(argv)
    print(convert(a.wheel, a.dataset, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
