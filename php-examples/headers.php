<?php
// Response control: ?code=NNN sets the status, a custom header and a cookie are always sent,
// ?location=URL redirects.
$code = (int)($_GET['code'] ?? 200);
if ($code >= 100 && $code <= 599) {
    http_response_code($code);
}
header('X-Fastpm-Example: headers');
setcookie('example', 'cookie-value', ['path' => '/', 'httponly' => true]);
if (isset($_GET['location'])) {
    header('Location: ' . $_GET['location']);
}
header('Content-Type: text/plain');
echo "status ", http_response_code(), "\n";
