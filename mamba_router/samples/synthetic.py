"""Long synthetic judgments for examples, benchmarks and tests: deterministic, invented, and shaped like the real thing.

A judgment built here has a cause title, numbered paragraphs of reasoning with citations, statutory sections, dates
and sums, and a "Page N of M" footer after every page, so every routing rule has something real to look at. Every
name, number and fact is invented; the same ``seed`` always gives the same text.
"""

from __future__ import annotations

import random

PAGE_CHARS = 3200  # about one printed page of a judgment

_PARTIES = (
    "Meridian Textiles Private Limited",
    "Harbour Logistics Limited",
    "the State Transport Authority",
    "Kaveri Agro Industries",
    "Sunrise Housing Co-operative Society",
    "the Municipal Corporation",
    "Northern Power Distribution Company",
    "Asha Devi",
    "Ramesh Kumar Iyer",
    "the Union of India",
)
_STATUTES = (
    ("Section", "96", "the Code of Civil Procedure, 1908"),
    ("Section", "73", "the Indian Contract Act, 1872"),
    ("Order", "XLI Rule 27", "the Code of Civil Procedure, 1908"),
    ("Section", "65B", "the Indian Evidence Act, 1872"),
    ("Article", "226", "the Constitution"),
    ("Section", "34", "the Arbitration and Conciliation Act, 1996"),
    ("Section", "5", "the Limitation Act, 1963"),
    ("Section", "138", "the Negotiable Instruments Act, 1881"),
)
_REPORTERS = ("SCC", "SCR", "AIR", "Bom LR", "Mad LJ", "DLT")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_SENTENCES = (
    "The learned counsel for the {role} submitted that {claim}.",
    "We are unable to accept this submission, for the reasons that follow.",
    "In {case}, this Court held that {principle}.",
    "The same view was taken in {case}, where the facts were materially similar.",
    "Under {section} of {statute}, the burden of proof lies on the party who asserts the fact.",
    "The trial court recorded, on {date}, that the {thing} had not been produced in evidence.",
    "The {role} claimed a sum of Rs. {amount} with interest at {rate} per cent per annum from {date}.",
    "It is not in dispute that the {thing} was delivered on {date} and acknowledged on the same day.",
    "The finding of the first appellate court on this issue is, in our opinion, perverse.",
    "A decree for specific performance is discretionary, and the discretion must be exercised judicially.",
    "The writ petition was filed after a delay of {days} days, which has not been satisfactorily explained.",
    "The question whether {claim} is a mixed question of law and fact.",
    "Learned counsel relied on paragraph {para} of {case} in support of that proposition.",
    "The plaint was amended on {date} to add a prayer for {relief}.",
    "We have perused the record, including Exhibits P-{exhibit} to P-{exhibit2}, with care.",
    "The bench that heard the earlier appeal did not have the benefit of the later decision in {case}.",
    "No order as to costs was made by the court below, and none is called for on that count.",
    "The respondent's witness admitted in cross-examination that {claim}.",
    "That admission is fatal to the defence raised under {section} of {statute}.",
    "The limitation period began to run on {date}, when the cause of action first arose.",
)
_CLAIMS = (
    "the consignment was lost through no fault of the carrier",
    "the notice of termination was validly served",
    "the email of the branch manager amounted to an acceptance of the declared value",
    "the tender conditions were arbitrary and violative of Article 14",
    "the award of the arbitral tribunal was contrary to the public policy of India",
    "the cheque was issued towards a legally enforceable debt",
    "the suit was barred by limitation",
    "the sale deed was executed under undue influence",
    "the compensation awarded was grossly inadequate",
)
_PRINCIPLES = (
    "an electronic record accessible for later reference satisfies a requirement of writing",
    "a party cannot approbate and reprobate in the same proceeding",
    "the appellate court must deal with the reasons given by the trial court before reversing it",
    "a limitation clause is construed strictly against the party relying on it",
    "delay alone is no ground to refuse relief where no third-party rights have intervened",
)
_THINGS = ("consignment note", "invoice", "bank guarantee", "sale deed", "inspection report", "demand notice")
_RELIEFS = ("damages", "a permanent injunction", "mesne profits", "a declaration of title", "refund of the deposit")


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1995, 2025)}"


def _case(rng: random.Random) -> str:
    first, second = rng.sample(_PARTIES, 2)
    year = rng.randint(1960, 2024)
    return f"{first} v. {second}, ({year}) {rng.randint(1, 12)} {rng.choice(_REPORTERS)} {rng.randint(1, 999)}"


def _sentence(rng: random.Random) -> str:
    label, number, statute = rng.choice(_STATUTES)
    values = {
        "role": rng.choice(("appellant", "respondent", "petitioner", "plaintiff", "defendant")),
        "claim": rng.choice(_CLAIMS),
        "case": _case(rng),
        "principle": rng.choice(_PRINCIPLES),
        "section": f"{label} {number}",
        "statute": statute,
        "date": _date(rng),
        "thing": rng.choice(_THINGS),
        "amount": f"{rng.randint(1, 99)},{rng.randint(10, 99)},{rng.randint(100, 999)}",
        "rate": rng.choice(("6", "9", "12", "18")),
        "days": rng.randint(30, 900),
        "para": rng.randint(4, 60),
        "relief": rng.choice(_RELIEFS),
        "exhibit": rng.randint(1, 20),
        "exhibit2": rng.randint(21, 60),
    }
    return rng.choice(_SENTENCES).format(**values)


def synthetic_judgment(pages: int = 40, *, seed: int = 0) -> str:
    """A judgment of ``pages`` pages (about 3,200 characters each) with "Page N of M" footers."""
    if isinstance(pages, bool) or not isinstance(pages, int) or pages < 1:
        raise ValueError(f"pages must be a positive int, got {pages!r}")
    rng = random.Random(seed)
    appellant, respondent = rng.sample(_PARTIES, 2)
    header = (
        "IN THE HIGH COURT OF JUDICATURE\nCIVIL APPELLATE JURISDICTION\n\n"
        f"Civil Appeal No. {rng.randint(100, 4999)} of {rng.randint(2015, 2025)}\n\n"
        f"{appellant} ............ Appellant\nversus\n{respondent} ............ Respondent\n\n"
        "(A synthetic judgment generated for software tests. Every name, number and fact in it is invented.)\n\n"
        "JUDGMENT\n\n"
    )
    out = [header]
    paragraph = 1
    for page in range(1, pages + 1):
        size = len(header) if page == 1 else 0
        while size < PAGE_CHARS:
            text = f"{paragraph}. " + " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))
            out.append(text + "\n\n")
            size += len(text) + 2
            paragraph += 1
        out.append(f"Page {page} of {pages}\n\n")
    out.append(
        f"{paragraph}. For these reasons the appeal is allowed, the judgment and decree of the court below are set "
        "aside, and the suit is decreed as prayed, with costs.\n"
    )
    return "".join(out)
