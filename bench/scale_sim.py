"""Discrete-event simulation of medintake's AWS path at scale: five designs compared (docs/scale.md).

    python bench/scale_sim.py              # every figure of docs/scale.md (a few minutes on one core)
    python bench/scale_sim.py --quick      # the same tables on small scenarios (seconds)
    python bench/scale_sim.py --sources    # every input figure with its source and status
    python bench/scale_sim.py --design A --scenario burst --burst-docs 10000 --max-vcpus 256

Standard library only, deterministic for a seed (``--seed``), no AWS calls. Unit prices are
imported from bench/cost_model.py (never copied); per-document CPU work comes from the same
module (bench/README-pipeline.md measurements); the SubmitJob token bucket of each dispatcher
container is the project's own compute/ratelimit.py TokenBucket, run on the simulated clock.

What one document goes through (every design):
  upload -> S3 event -> SQS -> [dispatcher Lambda: SQS batch, reserved concurrency, SubmitJob through
  a token bucket per container and Batch's account-wide 50/s] -> Batch scheduling -> Fargate Spot
  (Fargate On-Demand when the Spot compute environment is at MaxVcpus) with Fargate's task launch
  rate, container start (ENI + image pull), run, Spot interruptions and retries -> Batch "Job State
  Change" event -> EventBridge -> tracker Lambda -> notice.  Designs:
  A  three jobs per document (extract; entities dependsOn extract; convert in parallel): today
  B  one job per document, the three stages in sequence in one container
  C  array jobs: the dispatcher packs an SQS batch into children of up to N documents or T seconds
     of work each (AWS_BATCH_JOB_ARRAY_INDEX picks the slice), a PDF whose extract work exceeds
     --split-work seconds split into page-range children plus a merge job that dependsOn the array
  D  long-running workers on Fargate Spot pulling from SQS, scaled on the backlog
  E  small uploads (estimated work <= 30 s) on a processing Lambda while its queue is short, the rest
     (large documents, a burst's overflow) as C
"""
from __future__ import annotations

import argparse
import heapq
import importlib.util
import math
import os
import random
import sys
from collections import deque
from dataclasses import dataclass, field, replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cost_model as cm  # noqa: E402  (prices with their sources, the workload)


def _load_token_bucket():
    """compute/ratelimit.py's TokenBucket, loaded by path (the compute package imports settings)."""
    path = os.path.join(os.path.dirname(HERE), "compute", "ratelimit.py")
    spec = importlib.util.spec_from_file_location("medintake_ratelimit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TokenBucket


TokenBucket = _load_token_bucket()

# ---------------------------------------------------------------------------------------------
# Input figures with their sources. status: official (read on the stored AWS page named),
# secondary (third-party page quoting AWS or measuring on AWS), measured (here), repo (the stack
# template / job definitions), assumption (no source; a sensitivity or option varies it).
# ---------------------------------------------------------------------------------------------
BATCH_QUOTAS = "https://docs.aws.amazon.com/batch/latest/userguide/service_limits.html"
FARGATE_THROTTLE = "https://docs.aws.amazon.com/AmazonECS/latest/userguide/throttling.html"
SOURCES: dict[str, tuple[object, str, str]] = {
    "submit_tps": (50, BATCH_QUOTAS + " ('Maximum number of transactions per second (TPS) for each account for "
                   "SubmitJob operations: 50', a quota that can't be changed, per Region); also "
                   "repost.aws/knowledge-center/aws-batch-requests-error", "official"),
    "array_size": ("2-10,000", BATCH_QUOTAS + " and https://docs.aws.amazon.com/batch/latest/userguide/array_jobs.html "
                   "(array size between 2 and 10,000; children <parent>:<index>; AWS_BATCH_JOB_ARRAY_INDEX from 0)",
                   "official"),
    "max_dependencies": (20, BATCH_QUOTAS + " (job dependencies per job)", "official"),
    "fargate_launch": ("burst 100, 20/s", FARGATE_THROTTLE + " (token bucket per account and Region: 100 tasks "
                       "burst, 20 tasks/s sustained, one bucket for On-Demand and one for Spot)", "official"),
    "fargate_billing": ("per second, 1-minute minimum, from image pull start",
                        "https://aws.amazon.com/fargate/pricing/ as quoted on devops.stackexchange.com/questions/4830 "
                        "and news.ycombinator item 19618766 ('from the time you start to download your container "
                        "image ... rounded up to the nearest second. A minimum charge of 1 minute applies'); "
                        "cost_model.MIN_BILLED_S", "secondary"),
    "fargate_no_cache": ("whole image pulled per task", "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/"
                         "fargate-pull-behavior.html (Linux on Fargate: images and layers are not cached; pull time "
                         "directly correlated to task start time)", "official"),
    "batch_starting": ("STARTING lasts the image pull", "https://docs.aws.amazon.com/batch/latest/userguide/"
                       "job_states.html", "official"),
    "image_mb": (355.0, "docs/worker-image.md: pushed gzip layers of 6b100acc33ca, 355.0 MB (356.8 MB for 72945df)",
                 "measured"),
    "provision_s": (10.0, "qiita.com/kjm/items/a86c5a425c57439ecfa0 (Fargate start: ENI allocation ~10 s, then the "
                    "pull takes most of the time); not billed (billing starts at the pull)", "secondary"),
    "pull_mb_per_s": (8.8, "elasticscale.com/blog/reduce-aws-fargate-pull-times-with-soci: a 413 MB image took 53-62 s "
                      "(mean 57 s) from task creation to start, 10 runs; (57 - 10 s provisioning) / 413 MB "
                      "-> 8.8 MB/s. "
                      "355 MB -> 40 s pull, 50 s start in all", "secondary (derived)"),
    "spot_warning_s": (120, "https://aws.amazon.com/premiumsupport/knowledge-center/fargate-spot-termination-notice/ "
                       "(two-minute warning, SIGTERM)", "official"),
    "spot_interrupt_per_h": (0.05, "AWS publishes no Fargate Spot interruption rate: assumed 0.05 per task-hour "
                             "(Poisson); sensitivity 0-1 per hour", "assumption"),
    "batch_sched_s": (10.0, "no published figure for SUBMITTED/PENDING -> RUNNABLE -> placement: assumed 10 s "
                      "(uniform 5-15 s) per scheduling step", "assumption"),
    "retry_attempts": (3, "job_definitions/*.json retryStrategy.attempts (Spot interruption -> RETRY)", "repo"),
    "job_reservations": ("extract 1 vCPU/3 GB, entities and convert 1 vCPU/2 GB, 30 GiB",
                         "job_definitions/*.json; cost_model.JOBS", "repo"),
    "max_vcpus": (32, "compute/cloudformation/medintake.yaml MaxVcpus default (each CE: Fargate Spot, Fargate)",
                  "repo"),
    "dispatcher": ("BatchSize 10, window 1 s, concurrency 5, 9 SubmitJob/s per container",
                   "compute/cloudformation/medintake.yaml DispatcherEventSource, DispatcherConcurrency, "
                   "SubmitRatePerSecond; compute/ratelimit.py (bucket capacity max(1, rate))", "repo"),
    "sqs_batch_limits": ("batch up to 10,000 with a window up to 300 s", "https://docs.aws.amazon.com/lambda/latest/dg/"
                         "services-sqs-parameters.html", "official"),
    "lambda_sqs_scaling": ("5 concurrent, +300 per minute", "https://docs.aws.amazon.com/lambda/latest/dg/"
                           "services-sqs-scaling.html", "official"),
    "submit_api_s": (0.1, "SubmitJob round trip, assumed", "assumption"),
    "dispatcher_per_doc_s": (0.03, "claim row + S3 head per document in the dispatcher, assumed", "assumption"),
    "eventbridge_s": (1.0, "Batch event -> EventBridge -> tracker invocation, assumed 1 s", "assumption"),
    "tracker_s": (0.3, "tracker Lambda, 512 MB x 0.3 s per event (docs/cost.md section 6)", "repo (assumption)"),
    "work": ("extract 0.15/1.9/1.3 s per page, entities 1 s, convert 0.8/0.8/2 s, +1 s per cold job",
             "bench/cost_model.py KINDS, ENTITIES_S, PY_START_S (bench/README-pipeline.md, README-renditions.md)",
             "measured"),
    "work_jitter": ("lognormal sigma 0.25", "spread of per-document work around the measured mean, assumed",
                    "assumption"),
    "lambda_vcpu": ("1,769 MB = 1 vCPU", "https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html",
                    "official"),
    "lambda_limits": ("15 min per invocation, 10,240 MB memory, /tmp 512-10,240 MB, 1,000 concurrent by default",
                      "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html (new accounts start "
                      "lower), https://docs.aws.amazon.com/lambda/latest/dg/API_EphemeralStorage.html; container "
                      "image up to 10 GB: gist yogeshnile/31933101645f182252f088a1a43d318e", "official"),
    "lambda_mem_gb": (3.0, "processing Lambda memory = the extract job's 3 GB (>1 vCPU; the work is single-threaded, "
                      "OMP_THREAD_LIMIT=1, so it runs at 1x)", "repo (assumption)"),
    "lambda_init_s": (4.0, "cold start of a container-image function with the worker's imports, billed; assumed",
                      "assumption"),
    "lambda_idle_s": (600.0, "a warm Lambda environment is kept 10 minutes idle, assumed", "assumption"),
    "lambda_conc": (100, "reserved concurrency of the processing Lambda (design E), a setting", "assumption"),
    "lambda_prices": ("GB-s and request", "cost_model.PRICES lambda_gb_second, lambda_request", "secondary"),
    "d_scaling": ("every 60 s, 10 queued documents per worker, min 1", "design D's autoscaling (CloudWatch 1-minute "
                  "metrics), assumed", "assumption"),
    "sqs_poll_s": (20, "SQS long poll of an idle worker (D): one request per 20 s", "assumption"),
    "eventbridge_price": (0.0, "AWS service events to the default bus are not charged: not verified here",
                          "assumption"),
    "burst_upload_s": (300.0, "the 100,000-file bulk import lands in S3 over 5 minutes, assumed", "assumption"),
}


def src(key):
    return SOURCES[key][0]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class Cfg:
    design: str = "A"
    seed: int = 1
    mix: str = cm.DEFAULT_MIX
    max_vcpus: int = 32
    disp_conc: int = 5
    submit_rate: float = 9.0
    submit_tps: float = 50.0
    sqs_batch: int = 10
    sqs_window: float = 1.0
    provision_s: float = 10.0
    start_s: float | None = None  # total start (provision + pull); None: from image size and pull rate
    image_mb: float = 355.0
    pull_mb_s: float = 8.8
    sched_s: float = 10.0
    spot_per_h: float = 0.05
    attempts: int = 3
    eb_s: float = 1.0
    tracker_s: float = 0.3
    launch_burst: float = 100.0
    launch_rate: float = 20.0
    jitter: float = 0.25
    # C (and E's large documents)
    c_batch: int = 500
    c_window: float = 5.0
    c_docs: int = 20
    c_work: float = 60.0
    split_work: float = 240.0  # split a PDF whose extract work exceeds this (s) into page-range children
    # D
    d_min: int = 1
    d_max: int = 64
    d_target: float = 10.0
    d_period: float = 60.0
    d_idle: float = 300.0
    # E
    e_max_work: float = 30.0
    e_conc: int = 100
    e_mem_gb: float = 3.0
    lambda_init: float = 4.0
    lambda_idle: float = 600.0

    @property
    def start_total(self) -> float:
        return self.start_s if self.start_s is not None else self.provision_s + self.image_mb / self.pull_mb_s

    @property
    def provision(self) -> float:
        return min(self.provision_s, self.start_total / 5)


PY = cm.PY_START_S
MEM = {"extract": 3.0, "entities": 2.0, "convert": 2.0}
EPH_EXTRA_GB = 10  # 30 GiB asked, 20 GB included (cost_model.JOBS)


@dataclass
class Doc:
    id: int
    kind: str
    pages: int
    t_arr: float
    ex: float = 0.0  # extract work, warm (s on one vCPU)
    en: float = 0.0
    cv: float = 0.0
    left: int = 0
    t_notice: float | None = None
    failed: bool = False

    @property
    def work(self) -> float:
        return self.ex + self.en + self.cv


class Job:
    __slots__ = ("units", "vcpu", "mem", "deps_left", "dependents", "attempt", "on_done", "done", "saved")

    def __init__(self, units, mem, on_done, deps=()):
        self.units = list(units)  # [(work_s, doc or None)], run in sequence after one interpreter start
        self.vcpu = 1.0
        self.mem = mem
        self.on_done = on_done
        self.deps_left = 0
        self.dependents = []
        self.attempt = 0
        self.done = False
        self.saved = []  # units an interrupted attempt finished (recorded per document, not redone)
        for d in deps:
            if not d.done:
                self.deps_left += 1
                d.dependents.append(self)

    @property
    def run(self):
        return PY + sum(w for w, _ in self.units)


@dataclass
class Usage:
    spot_vcpu_s: float = 0.0
    spot_gb_s: float = 0.0
    od_vcpu_s: float = 0.0
    od_gb_s: float = 0.0
    eph_gb_s: float = 0.0
    tasks: int = 0
    tasks_at_minimum: int = 0
    task_billed_s: list = field(default_factory=list)
    interruptions: int = 0
    submits: int = 0
    throttled: int = 0
    events: int = 0  # Batch job state change events (tracker invocations)
    disp_invocations: int = 0
    disp_busy_s: float = 0.0
    lambda_gb_s: float = 0.0
    lambda_invocations: int = 0
    lambda_cold: int = 0
    sqs_extra: int = 0
    submit_times: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------
class Sim:
    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.t = 0.0
        self.q: list = []
        self.seq = 0
        self.rng = random.Random(cfg.seed)
        self.u = Usage()
        self.docs: list[Doc] = []
        self.mix = cm.parse_mix(cfg.mix)
        # Batch / Fargate
        self.used = {"spot": 0.0, "od": 0.0}
        self.runnable: deque = deque()
        self.launch_tokens = {"spot": [cfg.launch_burst, 0.0], "od": [cfg.launch_burst, 0.0]}
        self.place_timer = None
        # dispatcher
        self.sqs: deque = deque()
        self.acct_recent: deque = deque()
        self.containers = [TokenBucket(cfg.submit_rate, clock=lambda: self.t, sleep=lambda d: None)
                           for _ in range(cfg.disp_conc)]
        self.free_containers = list(range(cfg.disp_conc))
        self.sqs_timer = None
        batch, window = (cfg.c_batch, cfg.c_window) if cfg.design in "CE" else (cfg.sqs_batch, cfg.sqs_window)
        self.batch_size, self.window = batch, window
        # Lambda (E)
        self.lq: deque = deque()
        self.l_busy = 0
        self.l_warm: list[float] = []  # times at which idle warm environments became idle
        # workers (D)
        self.wq: deque = deque()
        self.workers: dict[int, dict] = {}
        self.wid = 0
        self.idle: deque = deque()
        self.arrivals_end = 0.0
        self.noticed = 0

    # -- event loop
    def at(self, t, fn, *args):
        heapq.heappush(self.q, (t, self.seq, fn, args))
        self.seq += 1

    def run(self):
        n = len(self.docs)
        while self.q:
            t, _, fn, args = heapq.heappop(self.q)
            self.t = t
            fn(*args)
            if self.noticed == n and self.t >= self.arrivals_end and self.cfg.design == "D":
                break
        if self.cfg.design == "D":  # workers above the floor idle d_idle seconds before scale-in
            for i, w in enumerate(sorted(self.workers.values(), key=lambda w: w["t0"])):
                self.stop_worker(w, extra=0.0 if i < self.cfg.d_min else self.cfg.d_idle)

    # -- arrivals
    def new_doc(self, t):
        r = self.rng.random()
        acc = 0.0
        for kind, share, pages in self.mix:
            acc += share
            if r <= acc:
                break
        j = lambda: self.rng.lognormvariate(0, self.cfg.jitter) if self.cfg.jitter else 1.0  # noqa: E731
        d = Doc(len(self.docs), kind.name, pages, t)
        d.ex = pages * kind.extract_s_per_page * j()
        d.en = cm.ENTITIES_S * j()
        d.cv = kind.convert_s * j()
        self.docs.append(d)
        self.at(t, self.arrive, d)

    def arrivals(self, times):
        for t in times:
            self.new_doc(t)
        self.arrivals_end = max(times) if times else 0.0

    def arrive(self, d: Doc):
        if self.cfg.design == "D":
            self.wq.append(d)
            self.worker_poll()
        else:
            self.sqs.append((self.t, d))
            self.poll()

    def notice(self, d: Doc, t_event: float, failed=False):
        if d.t_notice is None:
            self.noticed += 1
            d.t_notice = t_event + self.cfg.eb_s + self.cfg.tracker_s
            d.failed = failed

    # -- SQS -> dispatcher Lambda
    def poll(self):
        while self.free_containers and self.sqs:
            if len(self.sqs) >= self.batch_size or self.t >= self.sqs[0][0] + self.window - 1e-9:
                msgs = [self.sqs.popleft()[1] for _ in range(min(self.batch_size, len(self.sqs)))]
                c = self.free_containers.pop()
                self.u.disp_invocations += 1
                actions = deque(self.plan(msgs))
                self.at(self.t + 0.05 + self.cfg_per_doc() * len(msgs), self.inv_step, c, actions, self.t)
            else:
                due = self.sqs[0][0] + self.window
                if self.sqs_timer != due:
                    self.sqs_timer = due
                    self.at(due, self.poll)
                break

    def cfg_per_doc(self):
        return src("dispatcher_per_doc_s")

    def inv_step(self, c, actions, t0):
        if not actions:
            self.u.disp_busy_s += self.t - t0
            self.free_containers.append(c)
            self.poll()
            return
        kind, payload = actions.popleft()
        if kind == "lambda":  # route a small document to the processing queue (SQS send, no SubmitJob)
            self.u.sqs_extra += 3
            self.at(self.t + 0.5, self.lambda_enqueue, payload)
            self.inv_step(c, actions, t0)
            return
        wait = self.containers[c].acquire()
        self.at(self.t + wait, self.try_submit, c, actions, t0, payload)

    def try_submit(self, c, actions, t0, jobs):
        recent = self.acct_recent  # Batch's account-wide SubmitJob quota: at most submit_tps calls in any second
        while recent and recent[0] <= self.t - 1.0:
            recent.popleft()
        if len(recent) >= self.cfg.submit_tps:  # 429 TooManyRequests; botocore retries with back-off
            self.u.throttled += 1
            self.at(recent[0] + 1.0 + self.rng.uniform(0.001, 0.05), self.try_submit, c, actions, t0, jobs)
            return
        recent.append(self.t)
        self.u.submits += 1
        self.u.submit_times.append(self.t)
        self.at(self.t + src("submit_api_s"), self.submitted, c, actions, t0, jobs)

    def submitted(self, c, actions, t0, jobs):
        if len(jobs) > 1:
            self.u.events += 3  # array parent: PENDING, RUNNING/..., SUCCEEDED
        for job in jobs:
            self.batch_submit(job)
        self.inv_step(c, actions, t0)

    # -- designs: what the dispatcher submits for a batch of documents
    def plan(self, msgs):
        design = self.cfg.design
        out = []
        if design == "A":
            for d in msgs:
                d.left = 2
                ex = Job([(d.ex, None)], MEM["extract"], lambda job, t: None)
                en = Job([(d.en, d)], MEM["entities"], self.part_done, deps=[ex])
                cv = Job([(d.cv, d)], MEM["convert"], self.part_done)
                out += [("submit", [ex]), ("submit", [en]), ("submit", [cv])]
        elif design == "B":
            for d in msgs:
                out.append(("submit", [Job([(d.work, d)], MEM["extract"], self.units_done)]))
        else:  # C, E
            big = []
            routed = 0
            for d in msgs:
                # E: a small upload goes to the processing Lambda while its queue is short (the dispatcher
                # reads the queue depth); in a burst the rest overflow into array jobs
                if (design == "E" and d.work <= self.cfg.e_max_work
                        and len(self.lq) + self.l_busy + routed < 2 * self.cfg.e_conc):
                    routed += 1
                    out.append(("lambda", d))
                else:
                    big.append(d)
            if big:
                out += self.plan_array(big)
        return out

    def plan_array(self, docs):
        cfg = self.cfg
        units, merges = [], []
        for d in docs:
            if d.ex > cfg.split_work:  # a large PDF: page ranges of up to c_work seconds each, then a merge
                n = math.ceil(d.ex / cfg.c_work)
                for i in range(n):
                    units.append((d.ex / n, None))
                merges.append(d)
            else:
                units.append((d.work, d))
        children, cur, cur_w = [], [], 0.0
        for w, d in units:
            if cur and (len(cur) >= cfg.c_docs or cur_w + w > cfg.c_work):
                children.append(cur)
                cur, cur_w = [], 0.0
            cur.append((w, d))
            cur_w += w
        if cur:
            children.append(cur)
        jobs = [Job(ch, MEM["extract"], self.units_done) for ch in children]
        out = [("submit", jobs)]
        if merges:  # one merge job (entities, convert, manifest of the split PDFs) dependsOn the array
            mj = Job([(d.en + d.cv + 0.5, d) for d in merges], MEM["extract"], self.units_done, deps=jobs)
            out.append(("submit", [mj]))
        return out

    def part_done(self, job, t):
        d = job.units[0][1]
        d.left -= 1
        if d.left == 0:
            self.notice(d, t)

    def units_done(self, job, t):
        for _, d in job.saved + job.units:
            if d is not None:
                self.notice(d, t)

    # -- AWS Batch on Fargate Spot / On-Demand
    def sched(self):
        return self.cfg.sched_s * self.rng.uniform(0.5, 1.5)

    def batch_submit(self, job):
        if job.deps_left:
            self.u.events += 1  # PENDING
        else:
            self.at(self.t + self.sched(), self.make_runnable, job)

    def make_runnable(self, job):
        self.u.events += 1
        self.runnable.append(job)
        self.place()

    def take_launch_token(self, ce):
        b = self.launch_tokens[ce]
        b[0] = min(self.cfg.launch_burst, b[0] + (self.t - b[1]) * self.cfg.launch_rate)
        b[1] = self.t
        if b[0] >= 1 - 1e-9:
            b[0] = max(0.0, b[0] - 1)
            return 0.0
        return (1 - b[0]) / self.cfg.launch_rate

    def place(self):
        cfg = self.cfg
        while self.runnable:
            job = self.runnable[0]
            if self.used["spot"] + job.vcpu <= cfg.max_vcpus:
                ce = "spot"
            elif self.used["od"] + job.vcpu <= cfg.max_vcpus:
                ce = "od"
            else:
                return  # both compute environments at MaxVcpus: wait for a task to end
            wait = self.take_launch_token(ce)
            if wait > 0:
                due = self.t + wait
                if self.place_timer is None or self.place_timer <= self.t:
                    self.place_timer = due
                    self.at(due, self.place)
                return
            self.runnable.popleft()
            self.launch(job, ce)

    def launch(self, job, ce):
        cfg = self.cfg
        self.used[ce] += job.vcpu
        self.u.events += 2  # STARTING, RUNNING
        start = cfg.start_total * self.rng.uniform(0.8, 1.2)
        total = start + job.run
        if ce == "spot" and cfg.spot_per_h > 0:
            ti = self.rng.expovariate(cfg.spot_per_h / 3600)
            if ti < total:
                self.at(self.t + ti, self.interrupted, job, ce, self.t, start, ti)
                return
        self.at(self.t + total, self.finished, job, ce, self.t, start)

    def bill(self, ce, vcpu, mem, seconds):
        s = max(cm.MIN_BILLED_S, math.ceil(seconds))
        self.u.tasks += 1
        self.u.tasks_at_minimum += seconds <= cm.MIN_BILLED_S
        self.u.task_billed_s.append(s)
        if ce == "spot":
            self.u.spot_vcpu_s += vcpu * s
            self.u.spot_gb_s += mem * s
        else:
            self.u.od_vcpu_s += vcpu * s
            self.u.od_gb_s += mem * s
        self.u.eph_gb_s += EPH_EXTRA_GB * s

    def interrupted(self, job, ce, t0, start, ti):
        self.used[ce] -= job.vcpu
        self.u.interruptions += 1
        self.bill(ce, job.vcpu, job.mem, ti - self.cfg.provision)
        # a child that records per-document progress skips the documents it finished (C, E)
        ran = ti - start - PY
        if ran > 0 and self.cfg.design in "CE" and len(job.units) > 1:
            done, acc = [], 0.0
            for w, d in job.units:
                if acc + w > ran:
                    break
                acc += w
                done.append((w, d))
            job.units = job.units[len(done):]
            job.saved += done
        job.attempt += 1
        self.u.events += 1
        if job.attempt < self.cfg.attempts:
            self.at(self.t + self.sched(), self.make_runnable, job)
        else:
            self.u.events += 1
            self.fail(job)
        self.place()

    def fail(self, job):
        """A job out of attempts: its documents fail; dependents fail with it (Batch fails them)."""
        for _, d in job.saved:
            if d is not None:
                self.notice(d, self.t)
        for _, d in job.units:
            if d is not None:
                self.notice(d, self.t, failed=True)
        for dep in job.dependents:
            self.fail(dep)

    def finished(self, job, ce, t0, start):
        self.used[ce] -= job.vcpu
        self.bill(ce, job.vcpu, job.mem, self.t - t0 - self.cfg.provision)
        self.u.events += 1  # SUCCEEDED
        job.done = True
        job.on_done(job, self.t)
        for dep in job.dependents:
            dep.deps_left -= 1
            if dep.deps_left == 0:
                self.at(self.t + self.sched(), self.make_runnable, dep)
        self.place()

    # -- design E: processing Lambda for small uploads
    def lambda_enqueue(self, d):
        self.lq.append(d)
        self.lambda_poll()

    def lambda_poll(self):
        cfg = self.cfg
        while self.lq and self.l_busy < cfg.e_conc:
            d = self.lq.popleft()
            self.l_busy += 1
            self.l_warm = [t for t in self.l_warm if self.t - t <= cfg.lambda_idle]
            if self.l_warm:
                self.l_warm.pop()
                dur = d.work
            else:
                self.u.lambda_cold += 1
                dur = cfg.lambda_init + d.work
            self.u.lambda_invocations += 1
            self.u.lambda_gb_s += cfg.e_mem_gb * dur
            self.at(self.t + dur, self.lambda_done, d)

    def lambda_done(self, d):
        self.l_busy -= 1
        self.l_warm.append(self.t)
        self.notice(d, self.t - self.cfg.eb_s)  # the function records the result itself: tracker only
        self.lambda_poll()

    # -- design D: long-running workers on Fargate Spot pulling from SQS
    def d_start(self):
        cfg = self.cfg
        self.at(0.0, self.d_scale)
        for _ in range(cfg.d_min):
            self.start_worker(at_once=True)

    def start_worker(self, at_once=False):
        self.wid += 1
        start = 0.0 if at_once else self.cfg.start_total * self.rng.uniform(0.8, 1.2)
        w = {"id": self.wid, "t0": self.t, "busy": None, "ready": False, "idle_since": None, "stopped": False}
        self.workers[w["id"]] = w
        self.u.tasks += 1
        if self.cfg.spot_per_h > 0:
            ti = self.rng.expovariate(self.cfg.spot_per_h / 3600)
            self.at(self.t + start + ti, self.worker_interrupted, w)
        self.at(self.t + start, self.worker_ready, w)

    def worker_ready(self, w):
        if w["stopped"]:
            return
        w["ready"] = True
        w["idle_since"] = self.t
        self.idle.append(w)
        self.worker_poll()

    def worker_poll(self):
        while self.wq and self.idle:
            w = self.idle.popleft()
            if w["ready"] and w["busy"] is None and not w["stopped"]:
                d = self.wq.popleft()
                w["busy"] = d
                self.u.sqs_extra += 2  # receive + delete (the base 3 counts one of each)
                if w["idle_since"] is not None:
                    self.u.sqs_extra += int((self.t - w["idle_since"]) / src("sqs_poll_s"))
                w["idle_since"] = None
                self.at(self.t + d.work, self.worker_done, w, d)

    def worker_done(self, w, d):
        if w["busy"] is not d:
            return
        w["busy"] = None
        w["idle_since"] = self.t
        self.notice(d, self.t - self.cfg.eb_s)
        if w.get("draining"):
            self.stop_worker(w)
        else:
            self.idle.append(w)
        self.worker_poll()

    def worker_interrupted(self, w):
        if w["stopped"]:
            return
        self.u.interruptions += 1
        d = w["busy"]
        if d is not None:
            # two-minute warning: finish the document if it fits, else hand it back to the queue
            remaining = d.work  # conservative: as if it had just started
            if remaining <= src("spot_warning_s"):
                w["draining"] = True
                return
            w["busy"] = None
            self.wq.appendleft(d)
        self.stop_worker(w)
        self.worker_poll()

    def stop_worker(self, w, extra=0.0):
        if w["stopped"]:
            return
        w["stopped"] = True
        del self.workers[w["id"]]
        s = max(cm.MIN_BILLED_S, math.ceil(self.t + extra - w["t0"]))
        self.u.spot_vcpu_s += 1.0 * s
        self.u.spot_gb_s += MEM["extract"] * s
        self.u.eph_gb_s += EPH_EXTRA_GB * s
        self.u.task_billed_s.append(s)
        if w["idle_since"] is not None:
            self.u.sqs_extra += int((self.t + extra - w["idle_since"]) / src("sqs_poll_s"))

    def d_scale(self):
        cfg = self.cfg
        busy = sum(1 for w in self.workers.values() if w["busy"] is not None)
        want = max(cfg.d_min, min(cfg.d_max, math.ceil((len(self.wq) + busy) / cfg.d_target)))
        have = len(self.workers)
        for _ in range(want - have):
            self.start_worker()
        if have > want:
            idle = [w for w in self.workers.values() if w["ready"] and w["busy"] is None
                    and self.t - (w["idle_since"] or self.t) >= cfg.d_idle]
            for w in idle[: have - want]:
                self.stop_worker(w)
        pending = self.wq or any(w["busy"] is not None for w in self.workers.values())
        if self.t < self.arrivals_end or pending:
            self.at(self.t + cfg.d_period, self.d_scale)


def simulate(cfg: Cfg, times: list[float]) -> Sim:
    sim = Sim(cfg)
    sim.arrivals(times)
    if cfg.design == "D":
        sim.d_start()
    sim.run()
    return sim


# ---------------------------------------------------------------------------------------------
# Arrivals
# ---------------------------------------------------------------------------------------------
def steady(rate: float, duration: float, seed: int) -> list[float]:
    rng = random.Random(seed * 7919 + 1)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        out.append(t)


def diurnal(mean_rate: float, hours: float, seed: int) -> list[float]:
    """Rate mean x (1 + 0.8 sin(2 pi (h - 9) / 24)): peak at 15:00, trough at 03:00 (thinning)."""
    rng = random.Random(seed * 7919 + 2)
    peak = mean_rate * 1.8
    t, out = 0.0, []
    while True:
        t += rng.expovariate(peak)
        if t >= hours * 3600:
            return out
        h = t / 3600
        if rng.random() <= (1 + 0.8 * math.sin(2 * math.pi * (h - 9) / 24)) / 1.8:
            out.append(t)


def burst(n: int, over_s: float, seed: int) -> list[float]:
    rng = random.Random(seed * 7919 + 3)
    return sorted(rng.uniform(0, over_s) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# Results: latency, throughput, cost
# ---------------------------------------------------------------------------------------------
def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    f = math.floor(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)


def other_per_doc(region: str, mix) -> float:
    """Design-independent per-document request lines of cost_model (S3, SQS+SNS+API GW, logs, KMS, trail)."""
    a = argparse.Namespace(spot_share=0.8, start_seconds=30, docs_per_job=1, entities="local")
    keep = ("S3 requests", "SQS+SNS+API GW", "CloudWatch Logs", "KMS requests", "CloudTrail S3 data events")
    total = 0.0
    for kind, share, pages in mix:
        lines = cm.per_document(region, kind, pages, a)
        total += share * sum(lines[k] for k in keep)
    return total


def costs(sim: Sim, region: str) -> dict[str, float]:
    """USD per 1,000 documents, by line (Comprehend Medical excluded: the same in every design)."""
    u, p = sim.u, lambda k: cm.price(k, region)
    n = len(sim.docs)
    spot = 1 - p("fargate_spot_discount")
    fargate = ((u.spot_vcpu_s * p("fargate_vcpu_hour") + u.spot_gb_s * p("fargate_gb_hour")) * spot
               + u.od_vcpu_s * p("fargate_vcpu_hour") + u.od_gb_s * p("fargate_gb_hour")
               + u.eph_gb_s * p("fargate_storage_gb_hour")) / 3600
    gbs, req = p("lambda_gb_second"), p("lambda_request")
    lam = (u.lambda_gb_s * gbs + u.lambda_invocations * req  # processing Lambda (E)
           + u.disp_invocations * req + u.disp_busy_s * 0.5 * gbs  # dispatcher, 512 MB
           + u.events * (req + 0.5 * sim.cfg.tracker_s * gbs)  # tracker, one invocation per Batch event
           + n * (req + 0.5 * 0.3 * gbs))  # upload API signing request
    if sim.cfg.design in "DE":  # the worker (D) or processing Lambda (E) records the result: one tracker call
        lam += (n if sim.cfg.design == "D" else u.lambda_invocations) * (req + 0.5 * sim.cfg.tracker_s * gbs)
    secrets = (u.tasks + u.lambda_cold + 2) * p("secret_api_call")  # one GetSecretValue per container
    sqs = u.sqs_extra * p("sqs_request")
    other = other_per_doc(region, sim.mix) * n
    k = 1000 / n
    return {"Fargate": fargate * k, "Lambda": lam * k, "SQS (extra)": sqs * k, "Secrets Manager": secrets * k,
            "other requests": other * k, "total": (fargate + lam + sqs + secrets + other) * k}


def fixed_month(region: str) -> float:
    a = argparse.Namespace(endpoints=7, azs=2, db_gb=20, alarms=8, entities="auto")
    return sum(cm.fixed_month(region, a).values())


def d_floor_month(cfg: Cfg, region: str) -> float:
    p = lambda k: cm.price(k, region)  # noqa: E731
    per_h = (p("fargate_vcpu_hour") + MEM["extract"] * p("fargate_gb_hour")) * (1 - p("fargate_spot_discount"))
    per_h += EPH_EXTRA_GB * p("fargate_storage_gb_hour")
    return cfg.d_min * cm.HOURS_PER_MONTH * per_h


def summary(sim: Sim) -> dict:
    lat = [d.t_notice - d.t_arr for d in sim.docs if d.t_notice is not None]
    ends = [d.t_notice for d in sim.docs if d.t_notice is not None]
    n = len(sim.docs)
    span = (max(ends) - min(d.t_arr for d in sim.docs)) if ends else float("nan")
    return {"docs": n, "noticed": len(lat), "failed": sum(d.failed for d in sim.docs),
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": max(lat) if lat else float("nan"),
            "docs_per_s": n / span if span else float("nan"), "span_s": span,
            "submits_per_doc": sim.u.submits / n, "tasks_per_doc": sim.u.tasks / n,
            "at_min": sim.u.tasks_at_minimum / max(1, sim.u.tasks), "interruptions": sim.u.interruptions,
            "throttled": sim.u.throttled, "lambda_share": sim.u.lambda_invocations / n,
            "max_submits_1s": max_in_window(sim.u.submit_times, 1.0)}


def max_in_window(times: list[float], w: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - w:
            j += 1
        best = max(best, i - j + 1)
    return best


def ceilings(cfg: Cfg) -> dict[str, tuple[float, str]]:
    """Analytic throughput ceiling (documents/s per region) and the constraint that binds."""
    mix = cm.parse_mix(cfg.mix)
    S = cfg.start_total
    work = sum(s * (p * k.extract_s_per_page + cm.ENTITIES_S + k.convert_s) for k, s, p in mix)
    ex = sum(s * p * k.extract_s_per_page for k, s, p in mix)
    conv = sum(s * k.convert_s for k, s, p in mix)
    docs_per_child = max(1.0, min(cfg.c_docs, cfg.c_work / work))
    caps = 2 * cfg.max_vcpus
    out = {}
    per = {  # (SubmitJob calls, Fargate tasks, vCPU-seconds held incl. start) per document
        "A": (3, 3, 3 * (S + PY) + ex + cm.ENTITIES_S + conv),
        "B": (1, 1, S + PY + work),
        "C": (1 / min(cfg.c_batch, 10000), 1 / docs_per_child, (S + PY) / docs_per_child + work),
    }
    for dsg, (sub, tasks, vcpu_s) in per.items():
        lim = {"SubmitJob 50/s": cfg.submit_tps / sub,
               "dispatcher tokens": cfg.disp_conc * cfg.submit_rate / sub,
               "Fargate launches 2x20/s": 2 * cfg.launch_rate / tasks,
               f"vCPU (2 x MaxVcpus {cfg.max_vcpus})": caps / vcpu_s}
        if dsg == "C":
            lim["dispatcher batches"] = cfg.disp_conc * cfg.c_batch / (0.05 + cfg.c_batch * src("dispatcher_per_doc_s"))
        k = min(lim, key=lim.get)
        out[dsg] = (lim[k], k)
    out["D"] = (cfg.d_max / work, f"{cfg.d_max} workers")
    # E: the processing Lambda's concurrency plus, for the overflow and large documents, C's ceiling
    out["E"] = (cfg.e_conc / work + out["C"][0], f"Lambda concurrency {cfg.e_conc} + C ({out['C'][1]})")
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
DESIGNS = {"A": "three jobs per document (today)", "B": "one job per document",
           "C": "array jobs, slices of documents", "D": "long-running workers (Fargate Spot)",
           "E": "Lambda for small uploads, C for the rest"}


def fmt_s(x):
    if x != x:
        return "-"
    if x >= 7200:
        return f"{x / 3600:.1f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.0f} s"


def run_scenario(base: Cfg, designs, times):
    return {d: simulate(replace(base, design=d), times) for d in designs}


def table_scenario(title, sims, regions):
    print(f"#### {title}")
    print()
    print("| design | docs | p50 upload-to-notice | p95 | max | docs/s achieved | SubmitJob/doc | tasks/doc "
          "| tasks at the 60 s minimum | Spot interruptions | " + " | ".join(f"USD/1,000 docs {r}" for r in regions)
          + " |")
    print("| --- " * (10 + len(regions)) + "|")
    for d, sim in sims.items():
        s = summary(sim)
        c = [costs(sim, r)["total"] for r in regions]
        print(f"| {d} {DESIGNS[d]} | {s['docs']:,} | {fmt_s(s['p50'])} | {fmt_s(s['p95'])} | {fmt_s(s['max'])} | "
              f"{s['docs_per_s']:.2f} | {s['submits_per_doc']:.3f} | {s['tasks_per_doc']:.3f} | {s['at_min']:.0%} | "
              f"{s['interruptions']} | " + " | ".join(f"{x:.3f}" for x in c) + " |")
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small scenarios (seconds)")
    ap.add_argument("--sources", action="store_true", help="list every input figure with its source")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--design", default="ABCDE", help="designs to run, e.g. AC")
    ap.add_argument("--scenario", default="all", choices=["all", "steady", "diurnal", "burst"])
    ap.add_argument("--rate", type=float, default=0.2, help="steady arrivals per second")
    ap.add_argument("--hours", type=float, default=2.0, help="steady scenario length")
    ap.add_argument("--diurnal-rate", type=float, default=0.1, help="diurnal mean arrivals per second")
    ap.add_argument("--burst-docs", type=int, default=100_000)
    ap.add_argument("--burst-max-vcpus", type=int, default=1024, help="MaxVcpus of the second burst run")
    ap.add_argument("--max-vcpus", type=int, default=32)
    ap.add_argument("--start-seconds", type=float, default=None, help="container start (default 10 + 355 MB / 8.8)")
    ap.add_argument("--spot-per-hour", type=float, default=0.05)
    ap.add_argument("--mix", default=cm.DEFAULT_MIX)
    ap.add_argument("--c-docs", type=int, default=20)
    ap.add_argument("--c-work", type=float, default=60.0)
    ap.add_argument("--c-window", type=float, default=5.0)
    ap.add_argument("--regions", default=",".join(cm.REGIONS))
    ap.add_argument("--no-sensitivity", action="store_true")
    a = ap.parse_args(argv)

    if a.sources:
        print("| figure | value | source | status |")
        print("| --- | --- | --- | --- |")
        for k, (v, s, st) in SOURCES.items():
            print(f"| {k} | {v} | {s} | {st} |")
        print("\nUnit prices: `python bench/cost_model.py --prices` (imported from there).")
        return

    regions = a.regions.split(",")
    designs = [d for d in a.design if d in DESIGNS]
    base = Cfg(seed=a.seed, mix=a.mix, max_vcpus=a.max_vcpus, start_s=a.start_seconds, spot_per_h=a.spot_per_hour,
               c_docs=a.c_docs, c_work=a.c_work, c_window=a.c_window)
    hours = 0.5 if a.quick else a.hours
    bdocs = min(a.burst_docs, 5000) if a.quick else a.burst_docs
    print(f"Seed {a.seed}; mix {a.mix}; container start {base.start_total:.0f} s "
          f"({base.provision:.0f} s provisioning + {base.start_total - base.provision:.0f} s image pull, billed); "
          f"Spot interruptions {base.spot_per_h:g} per task-hour; MaxVcpus {base.max_vcpus} per compute environment; "
          f"C/E: up to {base.c_docs} documents or {base.c_work:.0f} s of work per child, "
          f"SQS window {base.c_window:.0f} s; "
          f"USD per 1,000 documents = compute + requests, Comprehend Medical excluded"
          + (" (--quick)" if a.quick else ""))
    print()
    print("Fixed monthly cost of one stack (cost_model.fixed_month, USD): " + ", ".join(
        f"{r} {fixed_month(r):.2f}" for r in regions)
        + f"; design D adds its always-on floor of {base.d_min} worker(s): "
        + ", ".join(f"{r} {d_floor_month(base, r):.2f}" for r in regions))
    print()
    if a.scenario in ("all", "steady"):
        times = steady(a.rate, hours * 3600, a.seed)
        sims = run_scenario(base, designs, times)
        table_scenario(f"Steady: {a.rate:g} uploads/s for {hours:g} h", sims, regions)
        print(f"Cost lines of the steady scenario, {regions[0]}, USD per 1,000 documents:")
        print()
        names = list(costs(next(iter(sims.values())), regions[0]))
        print("| design | " + " | ".join(names) + " |")
        print("| --- " * (1 + len(names)) + "|")
        for d, sim in sims.items():
            c = costs(sim, regions[0])
            print(f"| {d} | " + " | ".join(f"{c[k]:.3f}" for k in names) + " |")
        print()
    if a.scenario in ("all", "diurnal"):
        dh = 6 if a.quick else 24
        times = diurnal(a.diurnal_rate, dh, a.seed)
        table_scenario(f"Diurnal: mean {a.diurnal_rate:g} uploads/s over {dh} h (peak 1.8x at 15:00, trough 0.2x)",
                       run_scenario(base, designs, times), regions)
    if a.scenario in ("all", "burst"):
        times = burst(bdocs, 300.0 * bdocs / 100_000 if a.quick else 300.0, a.seed)
        table_scenario(f"Burst: {bdocs:,} files uploaded within {max(times):.0f} s, MaxVcpus {base.max_vcpus}",
                       run_scenario(base, designs, times), regions[:1])
        big = replace(base, max_vcpus=a.burst_max_vcpus, d_max=2 * a.burst_max_vcpus)
        table_scenario(f"Burst: the same, MaxVcpus {big.max_vcpus} (D: up to {big.d_max} workers)",
                       run_scenario(big, designs, times), regions[:1])

    print("#### Throughput ceiling per region (documents/s, analytic, the binding constraint)")
    print()
    print("| design | at MaxVcpus 32 (stack default) | binding | at MaxVcpus 4096 (template maximum) | binding |")
    print("| --- | --- | --- | --- | --- |")
    lo, hi = ceilings(replace(base, max_vcpus=32)), ceilings(replace(base, max_vcpus=4096, d_max=8192))
    for d in designs:
        print(f"| {d} | {lo[d][0]:.2f} | {lo[d][1]} | {hi[d][0]:.1f} | {hi[d][1]} |")
    print()
    if a.no_sensitivity:
        return
    print("#### Sensitivity (steady scenario; p50 / p95 upload-to-notice; USD per 1,000 documents in us-east-1)")
    print()
    st_times = steady(a.rate, (0.5 if a.quick else 1.0) * 3600, a.seed)
    variants = [("baseline", {})]
    for s in (20.0, 90.0):
        variants.append((f"container start {s:.0f} s", {"start_s": s}))
    for r in (0.0, 0.5, 2.0):
        variants.append((f"Spot interruptions {r:g}/task-hour", {"spot_per_h": r}))
    variants.append(("mix: 80 % one-page photos", {"mix": "photo=0.8:1,born_digital=0.2:3"}))
    variants.append(("mix: 10 % scanned PDFs of 40 pages",
                     {"mix": "born_digital=0.45:3,scanned=0.3:2,photo=0.15:1,scanned=0.1:40"}))
    variants.append(("mix: 2 % scanned PDFs of 300 pages",
                     {"mix": "born_digital=0.49:3,scanned=0.3:2,photo=0.19:1,scanned=0.02:300"}))
    variants.append(("C/E: SQS window 30 s (fuller children at low load)", {"c_window": 30.0}))
    variants.append(("E: processing Lambda at 1,769 MB (1 vCPU)", {"e_mem_gb": 1.769}))
    print("| variant | " + " | ".join(f"{d} p50 / p95 | {d} USD" for d in designs) + " |")
    print("| --- " * (1 + 2 * len(designs)) + "|")
    for name, kw in variants:
        cells = []
        for d in designs:
            sim = simulate(replace(base, design=d, **kw), st_times)
            s = summary(sim)
            cells.append(f"{fmt_s(s['p50'])} / {fmt_s(s['p95'])} | {costs(sim, regions[0])['total']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()


if __name__ == "__main__":
    main()
