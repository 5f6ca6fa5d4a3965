<?php
// A multipart/form-data upload: every file's name, size and md5 (and any error code).
header('Content-Type: text/plain');
if (empty($_FILES)) {
    http_response_code(400);
    echo "no file uploaded (send multipart/form-data, e.g. curl -F file=@x)\n";
    exit;
}
foreach ($_FILES as $field => $file) {
    echo "field=", $field, "\n";
    echo "name=", $file['name'], "\n";
    echo "error=", $file['error'], "\n";
    echo "size=", $file['size'], "\n";
    echo "md5=", $file['error'] === UPLOAD_ERR_OK ? md5_file($file['tmp_name']) : '', "\n";
}
