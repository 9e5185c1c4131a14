"""Cost of 1,000 medintake documents per region, from cited AWS list prices (docs/cost.md).

    python bench/cost_model.py                      # the tables of docs/cost.md
    python bench/cost_model.py --mix born_digital=0.7:4,scanned=0.3:2 --docs-per-month 20000
    python bench/cost_model.py --docs-per-job 20    # what batching documents per Batch job would do
    python bench/cost_model.py --prices             # every price used, with its source and status

No network, no AWS calls, standard library only. Every unit price is in PRICES below with the
service, the price dimension, the region, the page it comes from, the date of the figure and its
status:

* ``official``: the figure or rule is in a stored copy of the AWS page named;
* ``secondary``: not readable on the AWS page here (its price cells are filled in by script), but
  quoted from that page by the dated third-party source named in ``note``;
* ``unverified``: a figure known from the price list but NOT verified against the price list here.

Workload figures (CPU seconds, characters, bytes) come from bench/README-pipeline.md,
bench/README-renditions.md and measurements of ../shared/corpus named in docs/cost.md.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2", "ap-southeast-1"]
# Where Amazon Comprehend Medical is not offered the entities job uses the local extractor (no per-character charge).
NO_COMPREHEND_MEDICAL = {"eu-central-1", "ap-southeast-1", "ap-east-1"}
HOURS_PER_MONTH = 730

# ---------------------------------------------------------------------------------------------
# Unit prices. value: a number for every region, or a dict region -> number.
# ---------------------------------------------------------------------------------------------
FARGATE_URL = "https://aws.amazon.com/fargate/pricing/"
PRICES: dict[str, dict] = {
    "fargate_vcpu_hour": dict(
        service="AWS Fargate (Linux/x86, On-Demand)", dimension="per vCPU-hour", url=FARGATE_URL,
        value={"us-east-1": 0.04048, "eu-west-1": 0.04048, "eu-central-1": 0.04656,
               "ap-southeast-2": 0.04856, "ap-southeast-1": 0.05056},
        status={"us-east-1": "secondary", "eu-central-1": "secondary"}, default_status="secondary",
        date="us-east-1: 2026-03-10 (wring.co) and vantage.sh; all five: fgcalc prices table (undated); "
             "eu-central-1 also 2026-07-07 (price-list effective date quoted in a public repo)",
        note="The AWS page renders its rate table by script. Sources: wring.co/blog/aws-fargate-pricing-guide "
             "(2026-03-10), vantage.sh/blog/fargate-pricing, github.com/theuves/fgcalc src/utils/data.js "
             "(transcribed from the AWS page, all regions), a public repo's rate card for "
             "EUC1-Fargate-vCPU-Hours:perCPU = 0.04656 effective 2026-07-07."),
    "fargate_gb_hour": dict(
        service="AWS Fargate (Linux/x86, On-Demand)", dimension="per GB-hour of memory", url=FARGATE_URL,
        value={"us-east-1": 0.004445, "eu-west-1": 0.004445, "eu-central-1": 0.00511,
               "ap-southeast-2": 0.00532, "ap-southeast-1": 0.00553},
        default_status="secondary", date="as fargate_vcpu_hour",
        note="Same sources as fargate_vcpu_hour (EUC1-Fargate-GB-Hours = 0.00511 effective 2026-07-07)."),
    "fargate_storage_gb_hour": dict(
        service="AWS Fargate ephemeral storage above the 20 GB included", dimension="per GB-hour",
        url=FARGATE_URL, value=0.000111, status={"us-east-1": "secondary"}, default_status="unverified",
        date="vantage.sh/blog/fargate-pricing (us-east-1)",
        note="us-east-1 figure; the same figure is used for the other regions (not verified for them). "
             "The job definitions ask for 30 GiB, so 10 GB are billed."),
    "fargate_spot_discount": dict(
        service="AWS Fargate Spot", dimension="discount off the On-Demand price (modelled)", url=FARGATE_URL,
        value=0.70, default_status="official", date="stored copy of the AWS page (undated crawl)",
        note="The page says 'up to a 70% discount'; Spot prices move with supply and demand, so 70% is the "
             "best case. fgcalc's Spot table has Spot at 0.30-0.31 of On-Demand in these five regions."),
    "comprehend_medical_nere_unit": dict(
        service="Amazon Comprehend Medical DetectEntitiesV2 (NERe)", dimension="per unit of 100 characters, "
        "first volume tier", url="https://aws.amazon.com/comprehend/medical/pricing/", value=0.01,
        default_status="secondary", date="2026-08-08 and 2026-08-21 (maziyarpanahi/openmed captures of the AWS page)",
        note="Billing rule (100-character units, 1-unit minimum per request; free tier 85k units in the first "
             "month) read on the stored AWS page; the $0.01 rate from openmed's dated capture "
             "(tiers $0.01 / $0.005 / $0.001 per unit; the tier boundaries are not verified here) and "
             "jobs/entities/comprehend.py. The page lists one price list, not one per region."),
    "lambda_gb_second": dict(
        service="AWS Lambda (x86)", dimension="per GB-second", url="https://aws.amazon.com/lambda/pricing/",
        value=0.0000166667, default_status="secondary",
        date="artillery 2.0.28 lib/platform/aws-lambda/prices.js (base rate; overrides only for af-south-1, "
             "ap-east-1, eu-south-1, me-*)", note="Free tier (400,000 GB-s a month) ignored."),
    "lambda_request": dict(
        service="AWS Lambda", dimension="per request", url="https://aws.amazon.com/lambda/pricing/",
        value=0.20 / 1e6, status={"us-east-1": "secondary"}, default_status="unverified",
        date="api-evangelist/aws-lambda plans (read 2026-09-20 from the AWS page)",
        note="$0.20 per million; free tier (1M requests a month) ignored."),
    "s3_standard_gb_month": dict(
        service="Amazon S3 Standard", dimension="per GB-month, first 50 TB", url="https://aws.amazon.com/s3/pricing/",
        value={"us-east-1": 0.023, "eu-west-1": 0.023, "eu-central-1": 0.0245, "ap-southeast-2": 0.025,
               "ap-southeast-1": 0.025},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: gist EverettBerry/a37438006529a55f42da6fdbc44a505c (2022-07-07)",
        note="Other regions from memory of the price list; CloudHealth's page gives the range $0.023-0.026."),
    "s3_put_request": dict(
        service="Amazon S3 Standard", dimension="per PUT/COPY/POST/LIST request",
        url="https://aws.amazon.com/s3/pricing/",
        value={"us-east-1": 0.005 / 1000, "eu-west-1": 0.005 / 1000, "eu-central-1": 0.0054 / 1000,
               "ap-southeast-2": 0.0055 / 1000, "ap-southeast-1": 0.0055 / 1000},
        default_status="unverified", date="-", note="Not verified against the price list here."),
    "s3_get_request": dict(
        service="Amazon S3 Standard", dimension="per GET and other request", url="https://aws.amazon.com/s3/pricing/",
        value={"us-east-1": 0.0004 / 1000, "eu-west-1": 0.0004 / 1000, "eu-central-1": 0.00043 / 1000,
               "ap-southeast-2": 0.00044 / 1000, "ap-southeast-1": 0.00044 / 1000},
        default_status="unverified", date="-", note="Not verified against the price list here."),
    "sqs_request": dict(
        service="Amazon SQS standard queue", dimension="per request (64 KB chunk)",
        url="https://aws.amazon.com/sqs/pricing/",
        value=0.40 / 1e6, status={"us-east-1": "secondary"}, default_status="unverified",
        date="gist allenheltondev/d028926b7fe3b0656c96af9140ab55e3 (2020-03-11)", note="Free tier 1M a month ignored."),
    "sns_publish": dict(
        service="Amazon SNS standard topic", dimension="per publish request", url="https://aws.amazon.com/sns/pricing/",
        value=0.50 / 1e6, status={"us-east-1": "secondary"}, default_status="unverified",
        date="gist allenheltondev/d028926b7fe3b0656c96af9140ab55e3 (2020-03-11)",
        note="Deliveries to e-mail/HTTP subscribers are priced separately and not counted."),
    "apigw_rest_request": dict(
        service="Amazon API Gateway REST API", dimension="per request, first 333M",
        url="https://aws.amazon.com/api-gateway/pricing/",
        value={"us-east-1": 3.50 / 1e6, "eu-west-1": 3.50 / 1e6, "eu-central-1": 3.70 / 1e6,
               "ap-southeast-2": 3.50 / 1e6, "ap-southeast-1": 3.50 / 1e6},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="gist allenheltondev/d028926b7fe3b0656c96af9140ab55e3 (2020-03-11, us-east-1)", note=""),
    "logs_ingest_gb": dict(
        service="Amazon CloudWatch Logs (Standard class)", dimension="per GB ingested",
        url="https://aws.amazon.com/cloudwatch/pricing/",
        value={"us-east-1": 0.50, "eu-west-1": 0.57, "eu-central-1": 0.63, "ap-southeast-2": 0.57,
               "ap-southeast-1": 0.57},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: infracost output in github.com/vreutova/infracost-idem-support/pull/2", note=""),
    "logs_store_gb_month": dict(
        service="Amazon CloudWatch Logs", dimension="per GB-month archived",
        url="https://aws.amazon.com/cloudwatch/pricing/",
        value=0.03, status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: same infracost output", note="Other regions assumed equal (not verified)."),
    "alarm_month": dict(
        service="Amazon CloudWatch alarms", dimension="per standard-resolution alarm metric per month",
        url="https://aws.amazon.com/cloudwatch/pricing/", value=0.10, status={"us-east-1": "secondary"},
        default_status="unverified", date="us-east-1: same infracost output", note=""),
    "kms_key_month": dict(
        service="AWS KMS", dimension="per customer managed key per month", url="https://aws.amazon.com/kms/pricing/",
        value=1.00, status={"us-east-1": "secondary"}, default_status="unverified",
        date="gist dasgoll/b88d5be05dcc0deb052ad40446c2fb40 (2019-10-30), no region named",
        note="The same figure is used in the five regions (not verified per region)."),
    "kms_request": dict(
        service="AWS KMS", dimension="per symmetric request (after 20,000 free a month)",
        url="https://aws.amazon.com/kms/pricing/",
        value=0.03 / 10000, status={"us-east-1": "secondary"}, default_status="unverified",
        date="same gist (2019-10-30)", note=""),
    "secret_month": dict(
        service="AWS Secrets Manager", dimension="per secret per month",
        url="https://aws.amazon.com/secrets-manager/pricing/",
        value=0.40, status={"us-east-1": "secondary"}, default_status="unverified",
        date="api-evangelist/amazon-secrets-manager plans (read 2026-09-20 from the AWS page's examples); "
             "a public repo's price table checked 2026-10-06", note=""),
    "secret_api_call": dict(
        service="AWS Secrets Manager", dimension="per API call", url="https://aws.amazon.com/secrets-manager/pricing/",
        value=0.05 / 10000, status={"us-east-1": "secondary"}, default_status="unverified",
        date="as secret_month", note=""),
    "endpoint_az_hour": dict(
        service="AWS PrivateLink interface VPC endpoint", dimension="per endpoint per AZ per hour",
        url="https://aws.amazon.com/privatelink/pricing/",
        value={"us-east-1": 0.01, "eu-west-1": 0.011, "eu-central-1": 0.012, "ap-southeast-2": 0.013,
               "ap-southeast-1": 0.013},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: awsnegotiations.com PrivateLink cost analysis (May 2026); $0.01 also in a public "
             "repo's table for us-west-2 (AWS Pricing API, checked 2026-10-06)",
        note="Billing rule (each AZ, each partial hour billed as a full hour) read on the stored AWS page."),
    "endpoint_gb": dict(
        service="AWS PrivateLink interface VPC endpoint", dimension="per GB processed, first 1 PB",
        url="https://aws.amazon.com/privatelink/pricing/", value=0.01, default_status="official",
        date="stored copies of the AWS page (English mirror and aws.amazon.com/jp/privatelink/pricing/)",
        note="Regional differences, if any, not verified."),
    "cloudtrail_data_event": dict(
        service="AWS CloudTrail data events (trail)", dimension="per event",
        url="https://aws.amazon.com/cloudtrail/pricing/",
        value=0.10 / 100000, default_status="unverified", date="-",
        note="$0.10 per 100,000 data events. The first copy of management events is free (official docs)."),
    "rds_instance_hour_multi_az": dict(
        service="Amazon RDS for MySQL, db.t4g.small, Multi-AZ (one standby)",
        dimension="per instance-hour (both instances)",
        url="https://aws.amazon.com/rds/mysql/pricing/",
        value={"us-east-1": 0.064, "eu-west-1": 0.068, "eu-central-1": 0.074, "ap-southeast-2": 0.080,
               "ap-southeast-1": 0.080},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: infratally.com 'AWS RDS pricing explained 2026' (t4g table: Single-AZ $0.032, "
             "Multi-AZ $0.064)",
        note="Multi-AZ = 2 x Single-AZ (AWS RDS user guide: compute billed for primary and standby)."),
    "rds_storage_gb_month_multi_az": dict(
        service="Amazon RDS gp3 storage, Multi-AZ", dimension="per GB-month (primary + standby)",
        url="https://aws.amazon.com/rds/mysql/pricing/",
        value={"us-east-1": 0.23, "eu-west-1": 0.254, "eu-central-1": 0.274, "ap-southeast-2": 0.276,
               "ap-southeast-1": 0.276},
        status={"us-east-1": "secondary"}, default_status="unverified",
        date="us-east-1: usage.ai RDS pricing calculator (June 2026): gp3 $0.115 per GB-month Single-AZ",
        note="Doubled for Multi-AZ per the AWS RDS user guide (storage billed for primary and standby)."),
    "ecr_gb_month": dict(
        service="Amazon ECR private repository storage", dimension="per GB-month",
        url="https://aws.amazon.com/ecr/pricing/",
        value=0.10, default_status="unverified", date="-", note=""),
}


def price(key: str, region: str) -> float:
    v = PRICES[key]["value"]
    return v[region] if isinstance(v, dict) else v


def status(key: str, region: str) -> str:
    p = PRICES[key]
    return p.get("status", {}).get(region, p["default_status"])


# ---------------------------------------------------------------------------------------------
# The workload.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One kind of upload: per-page work and text, per-document bytes (see docs/cost.md for the sources)."""
    name: str
    chars_per_page: float  # characters of text.txt per page (what DetectEntitiesV2 is sent)
    extract_s_per_page: float  # extract job seconds per page on one vCPU
    convert_s: float  # convert job seconds (page 1 only)
    original_mb_per_page: float
    renditions_mb: float  # five renditions of page 1
    searchable_pdf: bool


KINDS = {
    # pdf set of bench/README-pipeline.md: 47 pages, 147,252 characters (pdfium), 170 KB a file
    "born_digital": Kind("born_digital", 3133, 0.15, 0.8, 0.036, 2.4, False),
    # tesseract set (UNLV full pages with ground truth: 3,837 and 4,206 characters)
    "scanned": Kind("scanned", 4022, 1.9, 0.8, 0.10, 1.4, True),
    # phone photo: CPU as the SROIE receipt set; text 670 characters/page (79 receipts' ground truth);
    # bytes of a real 16 MP phone photo (3.0 MB) and its renditions (27.4 MB)
    "photo": Kind("photo", 670, 1.3, 2.0, 3.0, 27.4, True),
}
DEFAULT_MIX = "born_digital=0.5:3,scanned=0.3:2,photo=0.2:1"

# Fargate reservations from job_definitions/*.json: (vCPU, GiB memory, GiB ephemeral storage)
JOBS = {"extract": (1.0, 3.0, 30), "entities": (1.0, 2.0, 30), "convert": (1.0, 2.0, 30)}
MIN_BILLED_S = 60  # Fargate: per second, 1-minute minimum per task
PY_START_S = 1.0  # interpreter start + imports + fetching the original, per job (bench: ~0.45-0.6 s locally + I/O)
ENTITIES_S = 1.0  # entities job work per document (bench: 6.0-9.0 s for 8-12 documents, incl. loads)
RESULTS_MB = 0.1  # text.txt, pages.json, entities.json, manifest.json per document
REQUEST_MAX_CHARS = 20_000  # DetectEntitiesV2 part limit (jobs/entities/comprehend.py)


def parse_mix(text: str) -> list[tuple[Kind, float, int]]:
    mix = []
    for item in text.split(","):
        name, rest = item.split("=")
        share, pages = rest.split(":")
        mix.append((KINDS[name.strip()], float(share), int(pages)))
    total = sum(s for _, s, _ in mix)
    if abs(total - 1) > 1e-6:
        raise SystemExit(f"mix shares add up to {total}, not 1")
    return mix


def nere_units(chars: float) -> int:
    """Billed units of one document: parts of at most 20,000 characters, 100-character units, 1 minimum."""
    parts = max(1, math.ceil(chars / REQUEST_MAX_CHARS))
    per_part = chars / parts
    return parts * max(1, math.ceil(per_part / 100))


def job_seconds(kind: Kind, pages: int) -> dict[str, float]:
    """Seconds each job runs for one document (work only, without the task start)."""
    return {"extract": PY_START_S + pages * kind.extract_s_per_page,
            "entities": PY_START_S + ENTITIES_S,
            "convert": PY_START_S + kind.convert_s}


def billed_seconds(run_s: float, start_s: float, docs_per_job: int) -> float:
    """Billed task seconds per document when one task handles ``docs_per_job`` such documents."""
    return max(MIN_BILLED_S, start_s + docs_per_job * run_s) / docs_per_job


def per_document(region: str, kind: Kind, pages: int, a: argparse.Namespace) -> dict[str, float]:
    """Variable cost of one document of this kind, by line."""
    cost: dict[str, float] = {}
    spot_factor = a.spot_share * (1 - price("fargate_spot_discount", region)) + (1 - a.spot_share)
    fargate = 0.0
    for job, run_s in job_seconds(kind, pages).items():
        vcpu, mem, eph = JOBS[job]
        s = billed_seconds(run_s, a.start_seconds, a.docs_per_job)
        per_hour = vcpu * price("fargate_vcpu_hour", region) + mem * price("fargate_gb_hour", region)
        fargate += s / 3600 * per_hour * spot_factor
        fargate += s / 3600 * max(0, eph - 20) * price("fargate_storage_gb_hour", region)
    cost["Fargate (3 jobs)"] = fargate
    chars = kind.chars_per_page * pages
    unit = price("comprehend_medical_nere_unit", region)
    cost["Comprehend Medical"] = nere_units(chars) * unit if uses_cm(region, a) else 0.0
    # S3: ~12 PUTs (original upload, outputs, renditions, manifest) and ~10 GETs/HEADs per document
    cost["S3 requests"] = 12 * price("s3_put_request", region) + 10 * price("s3_get_request", region)
    # Lambda: upload API 1, dispatcher 1, tracker ~18 (6 Batch state changes x 3 jobs), 512 MB x 0.3 s each
    invocations = 20
    cost["Lambda"] = invocations * (price("lambda_request", region) + 0.5 * 0.3 * price("lambda_gb_second", region))
    # SQS: send (by S3) + receive + delete; SNS: one notice; API Gateway: one signing request
    cost["SQS+SNS+API GW"] = (3 * price("sqs_request", region) + price("sns_publish", region)
                             + price("apigw_rest_request", region))
    cost["CloudWatch Logs"] = 100e3 / 1e9 * price("logs_ingest_gb", region)  # ~100 KB of log lines per document
    cost["KMS requests"] = 25 * price("kms_request", region)  # SSE-KMS without bucket keys: ~1 per object call
    cost["Secrets Manager calls"] = 5 * price("secret_api_call", region)  # 3 jobs + 2 Lambdas cold
    cost["CloudTrail S3 data events"] = 25 * price("cloudtrail_data_event", region)
    return cost


def uses_cm(region: str, a: argparse.Namespace) -> bool:
    """Whether the entities job calls Comprehend Medical in this region (deploy's EntitiesBackend)."""
    return a.entities == "comprehend" or (a.entities == "auto" and region not in NO_COMPREHEND_MEDICAL)


def storage_mb(kind: Kind, pages: int) -> float:
    orig = kind.original_mb_per_page * pages
    return orig + RESULTS_MB + kind.renditions_mb + (orig if kind.searchable_pdf else 0.0)


def fixed_month(region: str, a: argparse.Namespace) -> dict[str, float]:
    endpoints = a.endpoints - (0 if uses_cm(region, a) else 1)  # no comprehendmedical endpoint
    return {
        "RDS MySQL db.t4g.small Multi-AZ": HOURS_PER_MONTH * price("rds_instance_hour_multi_az", region),
        f"RDS storage {a.db_gb} GB gp3 Multi-AZ": a.db_gb * price("rds_storage_gb_month_multi_az", region),
        f"Interface endpoints ({a.endpoints}, or {a.endpoints - 1} without comprehendmedical, x {a.azs} AZ)":
            endpoints * a.azs * HOURS_PER_MONTH * price("endpoint_az_hour", region),
        "KMS key": price("kms_key_month", region),
        "Secrets Manager secret": price("secret_month", region),
        f"Alarms ({a.alarms})": a.alarms * price("alarm_month", region),
        "ECR image (1 GB)": price("ecr_gb_month", region),
    }


def money(x: float) -> str:
    return f"{x:,.2f}" if x >= 0.995 else f"{x:.3f}" if x >= 0.0005 else f"{x:.5f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mix", default=DEFAULT_MIX, help="kind=share:pages,... (kinds: %s)" % ", ".join(KINDS))
    p.add_argument("--docs", type=int, default=1000, help="documents costed (default 1000)")
    p.add_argument("--docs-per-month", type=int, default=1000, help="for the total with the fixed monthly cost")
    p.add_argument("--spot-share", type=float, default=0.8, help="share of task time on Fargate Spot")
    p.add_argument("--start-seconds", type=float, default=30.0,
                   help="billed seconds before the job runs (image pull, start)")
    p.add_argument("--docs-per-job", type=int, default=1, help="documents per Batch job (1 today)")
    p.add_argument("--entities", choices=["auto", "comprehend", "local"], default="auto")
    p.add_argument("--endpoints", type=int, default=7, help="interface endpoints where Comprehend Medical is used")
    p.add_argument("--azs", type=int, default=2)
    p.add_argument("--db-gb", type=int, default=20)
    p.add_argument("--alarms", type=int, default=8)
    p.add_argument("--regions", default=",".join(REGIONS))
    p.add_argument("--prices", action="store_true", help="list every price with its source and status")
    a = p.parse_args(argv)
    regions = a.regions.split(",")

    if a.prices:
        mark = {"official": "", "secondary": " *", "unverified": " ?"}
        print("Unit prices in USD (no mark: on the stored AWS page; *: quoted from the AWS page by the dated "
              "source below; ?: NOT verified against the price list here)")
        print()
        print("| key | service | dimension | " + " | ".join(regions) + " |")
        print("| --- | --- | --- | " + " | ".join("---" for _ in regions) + " |")
        for key, pr in PRICES.items():
            cells = [f"{price(key, r):.8g}{mark[status(key, r)]}" for r in regions]
            print(f"| {key} | {pr['service']} | {pr['dimension']} | " + " | ".join(cells) + " |")
        print()
        print("| key | page | date / version of the figure | note |")
        print("| --- | --- | --- | --- |")
        for key, pr in PRICES.items():
            print(f"| {key} | {pr['url']} | {pr['date']} | {pr['note']} |")
        return

    mix = parse_mix(a.mix)
    print("Mix: " + ", ".join(f"{share:.0%} {k.name} ({pages} p)" for k, share, pages in mix)
          + f"; Spot share {a.spot_share:.0%}; task start {a.start_seconds:.0f} s; "
          f"{a.docs_per_job} document(s) per job")
    print()
    print("Per document kind (work per job, billed seconds, Comprehend Medical units, stored MB):")
    print()
    print("| kind | pages | extract s | entities s | convert s | billed task-s (3 jobs) | characters | NERe units "
          "| stored MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, share, pages in mix:
        js = job_seconds(k, pages)
        billed = sum(billed_seconds(s, a.start_seconds, a.docs_per_job) for s in js.values())
        chars = k.chars_per_page * pages
        print(f"| {k.name} | {pages} | {js['extract']:.1f} | {js['entities']:.1f} | {js['convert']:.1f} | "
              f"{billed:.0f} | {chars:,.0f} | {nere_units(chars)} | {storage_mb(k, pages):.1f} |")
    mean_mb = sum(share * storage_mb(k, pages) for k, share, pages in mix)
    print()
    rows = {}
    for r in regions:
        lines: dict[str, float] = {}
        for k, share, pages in mix:
            for name, c in per_document(r, k, pages, a).items():
                lines[name] = lines.get(name, 0.0) + share * c * a.docs
        lines["S3 storage, 1st month"] = mean_mb / 1024 * a.docs * price("s3_standard_gb_month", r)
        rows[r] = lines
    names = list(next(iter(rows.values())))
    print(f"Variable cost of {a.docs:,} documents (USD):")
    print()
    print("| line | " + " | ".join(regions) + " |")
    print("| --- | " + " | ".join("---" for _ in regions) + " |")
    for n in names:
        print(f"| {n} | " + " | ".join(money(rows[r][n]) for r in regions) + " |")
    var_total = {r: sum(rows[r].values()) for r in regions}
    print("| **variable total** | " + " | ".join(f"**{money(var_total[r])}**" for r in regions) + " |")
    print()
    print("Fixed monthly cost of one stack (USD/month):")
    print()
    fixed = {r: fixed_month(r, a) for r in regions}
    print("| line | " + " | ".join(regions) + " |")
    print("| --- | " + " | ".join("---" for _ in regions) + " |")
    fixed_names = []
    for r in regions:
        for n in fixed[r]:
            base = n.split(" (")[0]
            if base not in [f.split(" (")[0] for f in fixed_names]:
                fixed_names.append(n)
    for n in fixed_names:
        base = n.split(" (")[0]
        vals = [next(v for k, v in fixed[r].items() if k.split(" (")[0] == base) for r in regions]
        print(f"| {n} | " + " | ".join(money(v) for v in vals) + " |")
    fixed_total = {r: sum(fixed[r].values()) for r in regions}
    print("| **fixed total** | " + " | ".join(f"**{money(fixed_total[r])}**" for r in regions) + " |")
    print()
    m = a.docs_per_month
    print(f"A month of {m:,} documents (variable x {m / a.docs:g} + fixed), and per document:")
    print()
    print("| | " + " | ".join(regions) + " |")
    print("| --- | " + " | ".join("---" for _ in regions) + " |")
    month = {r: var_total[r] * m / a.docs + fixed_total[r] for r in regions}
    print("| month total | " + " | ".join(money(month[r]) for r in regions) + " |")
    print("| per document, all in | " + " | ".join(f"{month[r] / m:.4f}" for r in regions) + " |")
    print("| per document, variable only | " + " | ".join(f"{var_total[r] / a.docs:.5f}" for r in regions) + " |")
    print("| Comprehend Medical share of the month | " + " | ".join(
        f"{rows[r]['Comprehend Medical'] * m / a.docs / month[r]:.0%}" for r in regions) + " |")
    print()
    print(f"Storage grows by {mean_mb * m / 1024:,.1f} GB a month at this mix ({mean_mb:.1f} MB a document); "
          "each month kept adds its S3 line again.")


if __name__ == "__main__":
    main()
