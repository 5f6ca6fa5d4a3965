<?php
// A CPU-bound page: ?k= thousand rounds of arithmetic (default 200, about 2 ms of one core
// here), a fixed amount of work whatever the scheduling, to measure how a pool shares CPUs.
$k = max(0, min(100000, (int)($_GET['k'] ?? 200)));
$x = 0;
for ($i = 0; $i < $k * 1000; $i++) {
    $x = ($x * 31 + $i) % 1000003;
}
header('Content-Type: text/plain');
echo "k=$k x=$x\n";
