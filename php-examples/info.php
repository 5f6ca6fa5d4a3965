<?php
// What PHP sees: version, SAPI, the script fastpm chose, and the request.
header('Content-Type: text/plain; charset=utf-8');
echo "PHP ", PHP_VERSION, " (", PHP_SAPI, ")\n";
foreach (['SCRIPT_FILENAME', 'SCRIPT_NAME', 'REQUEST_METHOD', 'REQUEST_URI', 'QUERY_STRING',
          'DOCUMENT_ROOT', 'SERVER_SOFTWARE', 'REMOTE_ADDR'] as $key) {
    echo $key, '=', $_SERVER[$key] ?? '', "\n";
}
echo 'pid=', getmypid(), "\n";
if (isset($_GET['full'])) {
    phpinfo();
}
