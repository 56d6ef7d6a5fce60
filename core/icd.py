"""ICD-9-CM and ICD-10 helpers: normalization, chapters, clinical groups and Charlson comorbidities.

Charlson categories follow Quan et al., "Coding algorithms for defining comorbidities in ICD-9-CM
and ICD-10 administrative data", Med Care 2005;43(11):1130-9 (the enhanced ICD-9-CM and ICD-10
lists), with the original Charlson weights. Codes are matched by prefix on the dot-less code.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Optional

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

CLINICAL_GROUPS = ("circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
                   "genitourinary", "neoplasms", "other")

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
