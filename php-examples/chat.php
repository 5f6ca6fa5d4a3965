<?php
// A chat room on GRIP (docs/COMET.md): the server side of chat.html.
//   GET  chat.php?last_id=N     wait for the next message after N (no N: the next one sent)
//   POST chat.php  user=…&text=… publish a message to everyone waiting; answers 204
//
// The GET answers with Grip-* headers and ends at once: fastpm holds the request in its master
// (no php-cgi waits for it) and answers it with the next message published on channel "chat":
// the JSON a POST below publishes, with a Message-Id header that the browser sends back as
// last_id. With last_id, Grip-Channel says prev-id, so a message published while the browser
// was between two polls answers at once (from the channel's history) instead of being missed.
// When nothing is published within hold_seconds() the answer is this script's own: 204, and the
// browser polls again with the same last_id.
//
// A POST publishes through fastpm's POST /publish/ (Pushpin's EPCP JSON) on the master's status
// listener. FASTPM_PUBLISH_URL (set it in the pool's `env`) says where; the default is the
// embedded config's status_listen.

const CHANNEL = 'chat';
const MAX_TEXT = 2000;   // bytes
const MAX_USER = 64;     // bytes

// Seconds a poll is held: below nginx's fastcgi_read_timeout (60 s in conf/nginx.conf), or
// nginx answers 504 first. CHAT_HOLD_SECONDS in the pool's env overrides it (1..3600).
function hold_seconds(): int
{
    return max(1, min(3600, (int)(getenv('CHAT_HOLD_SECONDS') ?: 25)));
}
function fail(int $code, string $why): void
{
    http_response_code($code);
    header('Content-Type: text/plain; charset=utf-8');
    echo $why, "\n";
    exit;
}

function poll(): void
{
    $last = $_GET['last_id'] ?? '';
    if ($last !== '' && !ctype_digit($last)) {
        fail(400, 'last_id: a message id (digits)');
    }
    header('Grip-Hold: response');
    header('Grip-Channel: ' . CHANNEL . ($last !== '' ? "; prev-id=$last" : ''));
    header('Grip-Timeout: ' . hold_seconds());
    // The timeout answer: nothing new, poll again.
    http_response_code(204);
    header('Cache-Control: no-store');
}

function post(): void
{
    $user = trim((string)($_POST['user'] ?? ''));
    $text = trim((string)($_POST['text'] ?? ''));
    if ($user === '') {
        $user = 'anonymous';
    }
    if ($text === '') {
        fail(400, 'text: empty');
    }
    if (strlen($text) > MAX_TEXT || strlen($user) > MAX_USER) {
        fail(413, 'text over ' . MAX_TEXT . ' bytes or user over ' . MAX_USER);
    }
    if (!preg_match('//u', $text . $user)) {
        fail(400, 'not UTF-8');
    }
    $message = json_encode(
        ['user' => $user, 'text' => $text, 'time' => time()],
        JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES
    );
    $publish = json_encode(['items' => [[
        'channel' => CHANNEL,
        'formats' => ['http-response' => [
            'code' => 200,
            'headers' => ['Content-Type' => 'application/json', 'Cache-Control' => 'no-store'],
            'body' => $message,
        ]],
    ]]]);
    $url = getenv('FASTPM_PUBLISH_URL') ?: 'http://127.0.0.1:9180/publish/';
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Content-Type: application/json\r\n",
        'content' => $publish,
        'timeout' => 5,
        'ignore_errors' => true,   // read the master's answer on 4xx/5xx too
    ]]);
    $answer = @file_get_contents($url, false, $context);
    $status = 0;
    if (isset($http_response_header[0]) && preg_match('#^HTTP/\S+ (\d{3})#', $http_response_header[0], $m)) {
        $status = (int)$m[1];
    }
    if ($status !== 200) {
        $why = $status ? "$status " . trim((string)$answer) : "no answer from $url";
        error_log("chat.php: publish failed: $why");
        fail(502, "publish failed: $why");
    }
    http_response_code(204);
}

$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
if ($method === 'GET' || $method === 'HEAD') {
    poll();
} elseif ($method === 'POST') {
    post();
} else {
    header('Allow: GET, HEAD, POST');
    fail(405, 'method not allowed');
}
