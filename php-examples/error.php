<?php
// A fatal error: PHP answers 500 and logs the message (fastpm logs php's stderr).
header('Content-Type: text/plain');
echo "before the error\n";
undefined_function_for_the_example();
