# Benchmark targets, included by the Makefile. Results go to BENCH_OUT;
# each run's data directory is made (and removed) under BENCH_OUT/tmp.
BENCH ?= $(BIN)/bench
BENCH_OUT ?= bench/results
BENCH_AGENCIES ?= 2000
BENCH_BETS ?= 1000
BENCH_SCALE ?= 10,100,1000,10000
BENCH_SCALE_TOTAL ?= 1000000
BENCH_FLAGS ?=

BENCH_STORE ?= temp

.PHONY: bench bench-scale bench-smoke bench-pg

bench: build ## gnet vs goroutine-per-connection server, BENCH_AGENCIES agencies, next to the machine's limits
	$(BENCH) --agencies $(BENCH_AGENCIES) --bets $(BENCH_BETS) --data-dir $(BENCH_OUT)/tmp \
		--json $(BENCH_OUT)/bench.json --table $(BENCH_OUT)/bench.txt $(BENCH_FLAGS)

bench-scale: build ## both servers at 10..10,000 agencies, same total bets: table, JSON and SVG chart
	$(BENCH) --agencies $(BENCH_SCALE) --total-bets $(BENCH_SCALE_TOTAL) --data-dir $(BENCH_OUT)/tmp \
		--json $(BENCH_OUT)/scale.json --table $(BENCH_OUT)/scale.txt --svg $(BENCH_OUT)/scale.svg $(BENCH_FLAGS)

bench-smoke: build ## tiny bench of both servers for CI: fails on any lost bet or wrong winner, no timing checks
	$(BENCH) --agencies 20 --bets 200 --batch 50 --loopback-bytes 8388608 --disk-time 200ms \
		--data-dir $(BENCH_OUT)/tmp --json $(BENCH_OUT)/tmp/smoke.json --quiet

bench-pg: build ## file store vs PostgreSQL behind 1 and 2 front ends (BENCH_STORE=postgres://... or temp), K = 10,100,500
	$(BENCH) --store $(BENCH_STORE) --agencies 10,100,500 --bets 2000 --batch 100 --fronts 1,2 --data-dir $(BENCH_OUT)/tmp \
		--json $(BENCH_OUT)/pg.json --table $(BENCH_OUT)/pg.txt $(BENCH_FLAGS)
