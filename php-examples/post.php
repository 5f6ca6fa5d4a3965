<?php
// Reports the request body (length and md5 of php://input) and $_POST, then echoes the body
// when ?echo=1.
header('Content-Type: text/plain');
$body = file_get_contents('php://input');
echo "method=", $_SERVER['REQUEST_METHOD'], "\n";
echo "length=", strlen($body), "\n";
echo "md5=", md5($body), "\n";
foreach ($_POST as $name => $value) {
    echo "post[", $name, "]=", is_array($value) ? json_encode($value) : $value, "\n";
}
if (isset($_GET['echo'])) {
    echo "\n", $body;
}
