"""A deterministic generator of realistic catalog entries, for benchmarks.

Entries look like a city's catalog: departments of districts publishing models and
algorithms with Chinese titles, English summaries, a domain, tags and a runtime.
The same seed gives the same catalog, so runs are comparable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from yunnao.registry.schemas import PublishRequest

DISTRICTS = ["shinan", "shibei", "licang", "laoshan", "chengyang", "huangdao", "jimo", "jiaozhou"]
DEPARTMENTS = {
    "traffic": ("governance", "交通", "traffic"),
    "env": ("livelihood", "环境", "environment"),
    "health": ("livelihood", "卫生", "health"),
    "urban": ("governance", "城管", "urban management"),
    "water": ("livelihood", "水务", "water"),
    "police": ("governance", "公安", "public security"),
    "commerce": ("economy", "商务", "commerce"),
    "tax": ("economy", "税务", "tax"),
    "edu": ("livelihood", "教育", "education"),
    "emergency": ("governance", "应急", "emergency"),
}
SUBJECTS = [
    ("flow", "流量", "flow"),
    ("air", "空气质量", "air quality"),
    ("noise", "噪声", "noise"),
    ("crowd", "人流", "crowd"),
    ("parking", "停车", "parking"),
    ("signal", "信号灯", "signal"),
    ("fire", "火灾", "fire"),
    ("flood", "内涝", "flood"),
    ("waste", "垃圾", "waste"),
    ("energy", "能耗", "energy"),
    ("permit", "审批", "permit"),
    ("complaint", "投诉", "complaint"),
    ("vehicle", "车辆", "vehicle"),
    ("pipe", "管网", "pipe network"),
    ("school", "学位", "school places"),
    ("clinic", "门诊", "clinic visits"),
]
TASKS = [
    ("forecast", "预测", "Forecasts", "model"),
    ("anomaly", "异常检测", "Detects anomalies in", "model"),
    ("classify", "分类", "Classifies", "model"),
    ("detect", "识别", "Recognises", "model"),
    ("optimise", "优化", "Optimises", "algorithm"),
    ("match", "匹配", "Matches", "algorithm"),
    ("score", "评估", "Scores", "algorithm"),
    ("route", "路径规划", "Plans routes for", "algorithm"),
]
EXTRA_TAGS = ["realtime", "batch", "gis", "vision", "nlp", "timeseries", "iot", "open-data"]
RUNTIMES = ["inprocess"] * 5 + ["rayserve"] * 2 + ["bentoml"] * 2 + ["triton"]
CLASSES = ["public"] * 5 + ["internal"] * 4 + ["restricted"]
FILLER = (
    "Trained on the department's historical records and refreshed monthly. Inputs are "
    "validated against the schema; outputs include a confidence score. 数据按月更新。"
)


def entries(
    count: int, node_id: str, seed: int = 20261124
) -> Iterator[tuple[str, str, PublishRequest]]:
    """``count`` (namespace, name, spec) triples under ``node_id``."""
    rnd = random.Random(seed)
    for i in range(count):
        district = rnd.choice(DISTRICTS)
        dept = rnd.choice(list(DEPARTMENTS))
        domain, dept_zh, dept_en = DEPARTMENTS[dept]
        subj, subj_zh, subj_en = rnd.choice(SUBJECTS)
        task, task_zh, task_en, kind = rnd.choice(TASKS)
        namespace = f"{node_id}.{dept}"
        name = f"{subj}-{task}-{i:06d}"
        tags = list(dict.fromkeys([subj, dept, *rnd.sample(EXTRA_TAGS, rnd.randint(0, 3))]))
        yield (
            namespace,
            name,
            PublishRequest(
                version=f"{rnd.randint(0, 3)}.{rnd.randint(0, 9)}.{rnd.randint(0, 20)}",
                title=f"{district}{dept_zh}{subj_zh}{task_zh}",
                summary=f"{task_en} {subj_en} for the {dept_en} department of {district}",
                description=f"# {subj_zh}{task_zh}\n\n{task_en} {subj_en} ({i}). {FILLER}",
                kind=kind,
                domain=domain,
                tags=tags,
                classification=rnd.choice(CLASSES),
                owner=f"{dept_en} bureau, {district}",
                runtime={"type": rnd.choice(RUNTIMES)},
            ),
        )
