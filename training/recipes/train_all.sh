#!/usr/bin/env bash
# Train every recipe in parallel (one process each): train_all.sh CORPORA_DIR RUNS_DIR [extra seqtag train flags]
# e.g. training/recipes/train_all.sh ../shared/corpora runs --max-minutes 8
set -u
corpora=${1:?corpora dir}; runs=${2:?runs dir}; shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$runs"
train() {  # name recipe train dev
  ${SEQTAG:-seqtag} train --config "$here/$2.toml" --train "$corpora/$3" --dev "$corpora/$4" --out "$runs/$1" --no-progress "${@:5}" \
    >"$runs/$1.log" 2>&1 &
}
train ctb6-seg ctb6-seg ctb6/train.seg ctb6/dev.seg "$@"
train ctb6-seg-fast ctb6-seg-fast ctb6/train.seg ctb6/dev.seg "$@"
train ud-gsd-pos ud-gsd-pos ud-gsd/train.conllu ud-gsd/dev.conllu "$@"
train msra-ner msra-ner msra-news/train.char.bmes msra-news/dev.char.bmes "$@"
train resume-ner resume-ner resume/train.char.bmes resume/dev.char.bmes "$@"
train weibo-ner weibo-ner weibo/train.all.bmes weibo/dev.all.bmes "$@"
wait
tail -n 2 "$runs"/*.log
