# Benchmark targets, included by the Makefile. Results go to BENCH_OUT;
# each run's data directory is made (and removed) under BENCH_OUT/tmp, where
# the key files (bin/keygen) and the end-to-end CSV files (bin/gendata) are
# kept between invocations. The servers run at their defaults: secured,
# default log level, default window.
BENCH ?= $(BIN)/bench
BENCH_OUT ?= bench/results
BENCH_TMP ?= $(BENCH_OUT)/tmp
BENCH_AGENCIES ?= 2000
BENCH_BETS ?= 1000
BENCH_COURSE_REPS ?= 5
BENCH_SCALE ?= 10,100,1000,10000
BENCH_SCALE_TOTAL ?= 1000000
BENCH_BIG_BETS ?= 2000000
BENCH_BIG_REPS ?= 3
BENCH_STORE ?= temp
BENCH_PG_AGENCIES ?= 10,100,1000
BENCH_PG_TOTAL ?= 500000
BENCH_FLAGS ?=
BENCH_BINS := --server-bin $(BIN)/eventserver --agency-bin $(BIN)/agency --keygen-bin $(BIN)/keygen --gendata-bin $(BIN)/gendata

.PHONY: bench bench-scale bench-smoke bench-big bench-pg


bench: build ## both servers secured at BENCH_AGENCIES agencies, vs --insecure, gnet with metrics and at warn, the course-shaped end to end, the machine's limits
	$(BENCH) $(BENCH_BINS) --agencies $(BENCH_AGENCIES) --bets $(BENCH_BETS) --compare-insecure --compare-metrics --compare-log-level warn \
		--course-reps $(BENCH_COURSE_REPS) --data-dir $(BENCH_TMP) \
		--json $(BENCH_OUT)/bench.json --table $(BENCH_OUT)/bench.txt $(BENCH_FLAGS)

bench-scale: build ## both servers secured at 10..10,000 agencies, same total bets, reconnect storms: table, JSON and SVG chart
	$(BENCH) $(BENCH_BINS) --agencies $(BENCH_SCALE) --total-bets $(BENCH_SCALE_TOTAL) --data-dir $(BENCH_TMP) \
		--json $(BENCH_OUT)/scale.json --table $(BENCH_OUT)/scale.txt --svg $(BENCH_OUT)/scale.svg $(BENCH_FLAGS)

bench-smoke: build ## tiny bench of both servers secured, and the course-shaped end to end, for CI: fails on any lost bet or wrong winner, no timing checks
	$(BENCH) $(BENCH_BINS) --agencies 20 --bets 200 --batch 50 --course-reps 1 --loopback-bytes 8388608 --disk-time 200ms \
		--data-dir $(BENCH_TMP) --json $(BENCH_TMP)/smoke.json --quiet

bench-big: build ## two agencies × BENCH_BIG_BETS bets each, real bin/agency processes, against both servers
	$(BENCH) $(BENCH_BINS) --agencies none --big-bets $(BENCH_BIG_BETS) --big-reps $(BENCH_BIG_REPS) --data-dir $(BENCH_TMP) \
		--json $(BENCH_OUT)/big.json --table $(BENCH_OUT)/big.txt $(BENCH_FLAGS)

bench-pg: build ## the file store vs PostgreSQL behind 1 and 2 front ends, same total bets at each K (BENCH_STORE=temp: a throwaway cluster, fsync on; or postgres://... where bench may CREATE DATABASE)
	$(BENCH) --store $(BENCH_STORE) --fronts 1,2 --agencies $(BENCH_PG_AGENCIES) --total-bets $(BENCH_PG_TOTAL) \
		--server-bin $(BIN)/eventserver --keygen-bin $(BIN)/keygen --data-dir $(BENCH_TMP) \
		--json $(BENCH_OUT)/pg.json --table $(BENCH_OUT)/pg.txt $(BENCH_FLAGS)
