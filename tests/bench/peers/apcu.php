<?php
/*
 * SPDX-License-Identifier: MIT
 *
 * apcu.php - the APCu peer of tests/bench/compare. Run as
 *   php -d apc.enable_cli=1 -d apc.shm_size=512M apcu.php OPS_FILE WORKLOAD \
 *       NKEYS VALUE_BYTES SECONDS
 * where OPS_FILE is kvshm-bench --dump-ops output (little-endian uint32 key
 * numbers, bit 31 set for a write): the same operation sequence the other
 * systems run. One process (php-cli has no shared APCu between separate
 * runs; forked workers would share it, but PHP is the bottleneck anyway).
 *
 * What it measures includes PHP's own cost of a function call and of the
 * loop: it also times the same loop with the APCu call replaced by an
 * assignment ("empty loop") and reports both, so a reader can subtract.
 * Prints one JSON object.
 */
if ($argc != 6) {
	fwrite(STDERR, "usage: apcu.php OPS_FILE WORKLOAD NKEYS VALUE_BYTES SECONDS\n");
	exit(2);
}
[, $file, $workload, $nkeys, $vsize, $seconds] = $argv;
$nkeys = (int)$nkeys;
$vsize = (int)$vsize;
$budget = (int)((float)$seconds * 1e9);
if (!function_exists('apcu_enabled') || !apcu_enabled()) {
	fwrite(STDERR, "apcu.php: APCu is not enabled (apc.enable_cli=1?)\n");
	exit(1);
}

function value_of(int $i, int $vsize): string {
	$v = pack('P', $i) . str_repeat("\x5a", max(0, $vsize - 8));
	return substr($v, 0, $vsize);
}

/* the store: every key, and the counters for INCR */
$prefix = $workload === 'INCR' ? 'ctr:' : 'key:';
for ($i = 0; $i < $nkeys; $i++) {
	if ($workload === 'INCR')
		apcu_store(sprintf('ctr:%012d', $i), 0);
	else
		apcu_store(sprintf('key:%012d', $i), value_of($i, $vsize));
}

/* the operation sequence, keys made before anything is timed */
$raw = unpack('V*', file_get_contents($file));
$n = count($raw);
$keys = [];
$writes = [];
foreach ($raw as $word) {
	$keys[] = sprintf('%s%012d', $prefix, $word & 0x7fffffff);
	$writes[] = ($word & 0x80000000) !== 0;
}
unset($raw);
$mask = $n - 1; /* a power of two */
$val = value_of(0, $vsize);

function run_apcu(array $keys, array $writes, int $mask, string $workload,
		  string $val, int $vsize, int $budget): array {
	$ops = 0;
	$p = 0;
	$bad = 0;
	$start = hrtime(true);
	do {
		for ($i = 0; $i < 1024; $i++) {
			$k = $keys[$p];
			if ($workload === 'INCR') {
				apcu_inc($k, 1, $ok);
			} elseif ($writes[$p]) {
				apcu_store($k, $val);
			} else {
				$v = apcu_fetch($k);
				if (strlen($v) !== $vsize)
					$bad++;
			}
			$p = ($p + 1) & $mask;
		}
		$ops += 1024;
		$ns = hrtime(true) - $start;
	} while ($ns < $budget);
	return [$ops, $ns, $bad];
}

function run_empty(array $keys, array $writes, int $mask, string $workload,
		   string $val, int $vsize, int $budget): array {
	$ops = 0;
	$p = 0;
	$bad = 0;
	$start = hrtime(true);
	do {
		for ($i = 0; $i < 1024; $i++) {
			$k = $keys[$p];
			if ($workload === 'INCR') {
				$ok = $k;
			} elseif ($writes[$p]) {
				$v = $val;
			} else {
				$v = $k;
				if (strlen($v) !== 16)
					$bad++;
			}
			$p = ($p + 1) & $mask;
		}
		$ops += 1024;
		$ns = hrtime(true) - $start;
	} while ($ns < $budget);
	return [$ops, $ns, $bad];
}

run_apcu($keys, $writes, $mask, $workload, $val, $vsize, (int)($budget / 4)); /* warm-up */
[$ops, $ns, $bad] = run_apcu($keys, $writes, $mask, $workload, $val, $vsize, $budget);
[$eops, $ens] = run_empty($keys, $writes, $mask, $workload, $val, $vsize, $budget);
$info = apcu_sma_info(true);
$cache = apcu_cache_info(true);
echo json_encode([
	'backend' => 'apcu',
	'workload' => $workload,
	'keys' => $nkeys,
	'value_bytes' => $vsize,
	'procs' => 1,
	'failed' => $bad > 0,
	'ns_per_op' => $ns / $ops,
	'empty_loop_ns' => $eops ? $ens / $eops : 0,
	'mops' => $ops / $ns * 1e3,
	'items' => $cache['num_entries'] ?? 0,
	'store_bytes' => ($info['num_seg'] * $info['seg_size']) - $info['avail_mem'],
	'php' => PHP_VERSION,
	'apcu' => phpversion('apcu'),
]), "\n";
exit($bad > 0 ? 1 : 0);
