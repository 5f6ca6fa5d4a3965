<?php
// Waits ?ms= milliseconds (default 100, at most 60000), then answers: a slow backend.
$ms = max(0, min(60000, (int)($_GET['ms'] ?? 100)));
usleep($ms * 1000);
header('Content-Type: text/plain');
echo "slept $ms ms\n";
