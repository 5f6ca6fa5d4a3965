<?php
// chat_poll_loop.php of benches/comet_php.py (experiment d, docs/BENCHMARKS.md): the chat of
// php-examples/chat.php written the way PHP apps do long-polling on php-fpm today: the request
// stays in PHP, which looks for a new message every 100 ms for up to 30 s. Same interface as
// chat.php, so the same clients drive both:
//   GET  ?last_id=N   the newest message if its id > N (Message-Id header), else 204 after 30 s
//   POST user=…&text=…  store it as the newest message (id + 1); 204
// The newest message lives in chat-state.json beside this script (written whole, then renamed,
// under a lock), as a file, APCu or a database row would hold it.

const POLL_US = 100000;
const HOLD_S = 30;

$state = __DIR__ . '/chat-state.json';

function newest(string $state): array
{
    $text = @file_get_contents($state);
    $m = $text === false ? null : json_decode($text, true);
    return is_array($m) ? $m : ['id' => 0];
}

if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $lock = fopen("$state.lock", 'c');
    flock($lock, LOCK_EX);
    $id = newest($state)['id'] + 1;
    $message = ['user' => (string)($_POST['user'] ?? ''), 'text' => (string)($_POST['text'] ?? '')];
    file_put_contents("$state.tmp", json_encode(['id' => $id, 'message' => $message]));
    rename("$state.tmp", $state);
    flock($lock, LOCK_UN);
    http_response_code(204);
    exit;
}

$last = (int)($_GET['last_id'] ?? 0);
$deadline = microtime(true) + HOLD_S;
do {
    $m = newest($state);
    if ($m['id'] > $last) {
        header('Content-Type: application/json');
        header('Message-Id: ' . $m['id']);
        echo json_encode($m['message']);
        exit;
    }
    usleep(POLL_US);
} while (microtime(true) < $deadline);
http_response_code(204);
