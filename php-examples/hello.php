<?php
// The smallest page: what the benchmark measures.
echo "Hello from PHP\n";
