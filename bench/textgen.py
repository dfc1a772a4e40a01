"""Synthetic Chinese news-like text for benchmarks when the real corpora are absent.

Sentences are built from the small word lists below with a seeded random
generator: one to four clauses of subject, optional time/place/adverb, verb and
object, joined by commas. Their length (about 10 to 80 characters, mean near
CTB6's) and character mix are what matter for timing; the content does not.
"""

from __future__ import annotations

import random

SUBJECTS = ["政府", "公司", "记者", "专家", "学生", "委员会", "银行", "市场", "工人", "代表团", "他们", "我们",
            "这个项目", "有关部门", "研究人员", "国务院", "企业", "农民", "经济", "人民"]
TIMES = ["今年", "去年", "目前", "近日", "上个月", "明年", "十月", "今天上午", "最近几年", "１９９８年"]
PLACES = ["在北京", "在上海", "在全国", "在农村", "在国际市场上", "在会议上", "在香港", "在广东省", "在本地区"]
ADVERBS = ["已经", "正在", "进一步", "积极", "不断", "共同", "基本", "首次", "继续", "迅速"]
VERBS = ["发展", "提高", "加强", "推动", "建设", "召开", "完成", "扩大", "支持", "实现", "举行", "参加",
         "研究", "投资", "改革", "增长", "合作", "宣布", "签署", "介绍"]
OBJECTS = ["经济", "合作关系", "基础设施", "对外贸易", "工作会议", "技术水平", "生产能力", "投资环境",
           "社会保障制度", "高新技术产业", "友好关系", "国有企业改革", "２０％", "三千万美元", "新的目标",
           "教育事业", "环境保护", "农业生产", "金融市场", "ＷＴＯ谈判"]
LINKS = ["并", "同时", "而且", "因此", "但是", "此外"]
ENDS = ["。", "。", "。", "！", "？"]


def _clause(rng: random.Random, first: bool) -> list[str]:
    words = [rng.choice(LINKS)] if not first and rng.random() < 0.5 else []
    words.append(rng.choice(SUBJECTS))
    if rng.random() < 0.4:
        words.append(rng.choice(TIMES))
    if rng.random() < 0.3:
        words.append(rng.choice(PLACES))
    if rng.random() < 0.6:
        words.append(rng.choice(ADVERBS))
    words.append(rng.choice(VERBS))
    words.append(rng.choice(OBJECTS))
    return words


def segmented_sentence(rng: random.Random) -> list[str]:
    """One sentence as a list of words (punctuation marks are words)."""
    words: list[str] = []
    for k in range(rng.choice((1, 1, 2, 2, 3, 4))):
        if k:
            words.append("，")
        words += _clause(rng, first=k == 0)
    words.append(rng.choice(ENDS))
    return words


def segmented_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences, words separated by single spaces (the ``seg`` corpus format)."""
    rng = random.Random(seed)
    return [" ".join(segmented_sentence(rng)) for _ in range(n)]
