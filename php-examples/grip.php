<?php
// GRIP (docs/COMET.md): this script asks fastpm to hold the request on a channel and returns
// at once; its php-cgi serves the next request. fastpm removes every Grip-* header, keeps the
// request in its master, and answers it with the first message published on the channel
// (`fastpm publish NAME TEXT`, or POST /publish/), or — after Grip-Timeout seconds — with this
// script's own response below (status, headers, body).
//   grip.php?channel=NAME        the channel (default "news")
//            &timeout=S          seconds to hold, 1..3600 (default 55, as Pushpin)
//            &prev_id=ID         answer at once with the first retained message after ID
//            &code=NNN           the status of the timeout answer (default 200)
$channel = $_GET['channel'] ?? 'news';
if (!preg_match('/^[A-Za-z0-9._:\/-]{1,64}$/', $channel)) {
    http_response_code(400);
    header('Content-Type: text/plain');
    echo "channel: 1 to 64 of A-Z a-z 0-9 . _ : / -\n";
    exit;
}
$timeout = max(1, min(3600, (int)($_GET['timeout'] ?? 55)));
$prev = $_GET['prev_id'] ?? '';
$code = (int)($_GET['code'] ?? 200);

header('Grip-Hold: response');
header('Grip-Channel: ' . $channel . (ctype_digit($prev) ? "; prev-id=$prev" : ''));
header("Grip-Timeout: $timeout");

// What the client gets if nothing is published in time.
if ($code >= 200 && $code <= 599) {
    http_response_code($code);
}
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
header('X-Grip-Example: timeout');
echo "no message on $channel within $timeout s\n";
