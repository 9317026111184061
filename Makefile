# phrasesweep: the two commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# One persistent build folder outside the clone, shared by work and CI, so rebuilds are incremental.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/phrasesweep/target
export PHRASESWEEP_STATE ?= $(HOME)/.cache/phrasesweep/services
CARGO ?= cargo

.PHONY: setup build demo sweep-demo eval-dev train-demo train-cpu qsft-cpu qsft-trained services services-stop test chaos check-cuda bench bench-search bench-farm bench-scale bench-train recipe-cpu

setup:
	infra/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

## The embedded pipeline (no broker) on the fixture of ../shared/data: ingest, encode, index, retrieve, score,
## then a reader trained (about 5 min) answers from each retrieval's evidence at word budgets (EM/F1@budget).
demo: setup
	$(CARGO) run --bin phrasesweep -- run configs/demo.toml

## A sweep grid on the fixture (QSFT learning rate × loss terms, 4 points on one store), then its report.
sweep-demo: setup
	$(CARGO) build --bin phrasesweep
	$(CARGO_TARGET_DIR)/debug/phrasesweep run configs/sweep-demo.toml
	$(CARGO_TARGET_DIR)/debug/phrasesweep report out/sweep-demo -o out/sweep-demo/report.html

## The development benchmark: the dev corpus and the 500 NQ dev questions, every unit and mode, and BM25.
## Resumable: rerun after an interruption and finished jobs are skipped.
eval-dev: setup
	$(CARGO) build --bin phrasesweep
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/eval-dev.toml

## Training end to end on the fixture (reader, phrase encoder, two QSFT runs), a few minutes.
train-demo: setup
	$(CARGO) run --bin phrasesweep -- run configs/train-demo.toml

## The measured CPU training runs of docs/benchmarks.md: the reader and phrase encoder on SQuAD, and a
## `query` QSFT run against the NQ gold documents.
train-cpu: setup
	$(CARGO) build --bin phrasesweep
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/train-cpu.toml

qsft-cpu: setup
	python3 scripts/nq_gold_corpus.py ../shared/data/corpus/dev.docs.jsonl out/nq-gold.docs.jsonl
	$(CARGO) build --bin phrasesweep
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/qsft-cpu.toml

## QSFT from the phrase encoder that `make train-cpu` trained, against the NQ gold documents encoded with it.
qsft-trained: train-cpu
	infra/python.sh scripts/export_trained.py out/train-cpu out/models/train-cpu
	python3 scripts/nq_gold_corpus.py ../shared/data/corpus/dev.docs.jsonl out/nq-gold.docs.jsonl
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/qsft-trained.toml

## The DensePhrases recipe on this CPU's budget (docs/benchmarks.md, "The CPU recipe"): reader, phrase
## encoder, the dev corpus encoded with it, six QSFT runs and the study's retrievals, then the learning
## curve (the phrase encoder at smaller sizes) on the same store. Resumable.
recipe-cpu: setup
	$(CARGO) build --bin phrasesweep
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/recipe-cpu.toml
	time $(CARGO_TARGET_DIR)/debug/phrasesweep run configs/recipe-cpu-curve.toml

## Training speed (seconds per 1,000 questions per training job) on configs/bench-train.toml.
bench-train: setup
	scripts/bench_train.sh

## RabbitMQ and the S3 server on 127.0.0.1.
services: setup
	infra/rabbitmq-start.sh
	infra/s3-start.sh

services-stop:
	infra/s3-stop.sh
	infra/rabbitmq-stop.sh

## Every test, against the real services, then the CUDA build check.
test: services
	$(CARGO) test --workspace --lib --bins --tests --no-fail-fast
	$(MAKE) check-cuda

## The chaos suite of docs/reliability.md: three seeded runs of 20 worker kills, a RabbitMQ node restart and a
## 20 s S3 stop during a dense sweep on the farm, then the poison, duplicate and crash cases. `make test` runs
## one short schedule.
CHAOS_REPORT ?= $(CURDIR)/out/chaos.txt
chaos: services
	mkdir -p $(dir $(CHAOS_REPORT))
	for seed in 1 2 3; do \
	  PHRASESWEEP_CHAOS_SEED=$$seed PHRASESWEEP_CHAOS_KILLS=20 PHRASESWEEP_CHAOS_S3_STOP_S=20 PHRASESWEEP_CHAOS_REPORT=$(CHAOS_REPORT) \
	    $(CARGO) test --test chaos -- --nocapture || exit 1; \
	done
	$(CARGO) test --test reliability
	cat $(CHAOS_REPORT)

check-cuda:
	$(CARGO) check -p phrasesweep-workers --features cuda

## burn vs PyTorch encoder throughput (not a test; numbers go to docs/benchmarks.md).
bench: setup
	scripts/bench.sh

## Search speed: per-question IVF vs the batch scan vs faiss on the dev phrase index (`make eval-dev` first).
bench-search: setup
	scripts/bench_search.sh

## The demo sweep embedded vs on RabbitMQ + S3 with three workers, on this machine.
bench-farm: services
	scripts/bench_farm.sh

## The coordinator planning and following a sweep of 100,000 jobs against the S3 test server (docs/scale.md).
bench-scale: services
	set -a && . $(PHRASESWEEP_STATE)/s3.env && set +a && $(CARGO) run --example scale
