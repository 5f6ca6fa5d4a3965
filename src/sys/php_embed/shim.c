/*
 * fastpm's PHP SAPI: PHP (libphp, the embed build) run inside a worker process, one request at
 * a time, as php-fpm's children run it. build.rs compiles this file into a small shared object
 * that fastpm carries in its binary and loads (after libphp8.2.so) only in a worker process of
 * a `php_children = "embedded"` pool (see mod.rs): fastpm itself never links libphp.
 *
 * The Rust side owns the FastCGI protocol, the script's resolution and every byte of I/O. This
 * file only translates: a request (its params, body and script) into PHP's request globals, and
 * PHP's output, headers, errors and body reads into calls of the callbacks Rust gives at
 * start-up. Behaviour copied in spirit from sapi/fpm/fpm/fpm_main.c (php-fpm's SAPI): the SAPI
 * name "fpm-fcgi" (opcache and applications treat the SAPI as php-fpm's), `Status:` lines,
 * $_SERVER from the params (clear_env), PHP_SELF, HTTP auth, PHP_VALUE/PHP_ADMIN_VALUE,
 * .user.ini files and php.ini's [PATH=]/[HOST=] sections, fastcgi_finish_request() and
 * getallheaders() / apache_request_headers().
 *
 * Bail-outs (PHP's fatal errors longjmp) never cross a Rust frame: every call into PHP from
 * here is inside zend_try, and the callbacks into Rust return before PHP may bail out.
 */
#include <php.h>
#include <SAPI.h>
#include <php_main.h>
#include <php_ini.h>
#include <php_variables.h>
#include <zend_ini.h>
#include <zend_ini_scanner.h>
#include <zend_signal.h>
#include <zend_smart_str.h>
#include <http_status_codes.h>
#include <ext/standard/head.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* One FastCGI param; name and value are each followed by a NUL (not counted in the lengths). */
struct fastpm_param {
	const char *name;
	size_t name_len;
	char *value;
	size_t value_len;
};

/* One request, as Rust hands it over. */
struct fastpm_request {
	const struct fastpm_param *params;
	size_t nparams;
	/* The script to run (already resolved and checked by fastpm), NUL-terminated. */
	const char *script;
	const char *body;
	size_t body_len;
	/* Rust's per-request output; passed back to the callbacks. */
	void *sink;
};

/* What PHP's output, flushes and messages become. write/flush/finish return 0, or -1 when the
 * client is gone. log gets a NULL sink outside a request (start-up messages). finish ends the
 * answer while the script goes on (fastcgi_finish_request). */
struct fastpm_callbacks {
	int (*write)(void *sink, const char *bytes, size_t len);
	int (*flush)(void *sink);
	void (*log)(void *sink, const char *message, size_t len);
	int (*finish)(void *sink);
};

/* fastpm_php_run's answers besides PHP's exit status. */
#define FASTPM_REQUEST_STARTUP_FAILED (-1)

static const struct fastpm_callbacks *callbacks;
/* The request being run; NULL between requests. */
static const struct fastpm_request *current;
/* How much of current->body PHP has read. */
static size_t body_read;
/* fastcgi_finish_request() ended the answer: later output goes nowhere. */
static bool finished;

static const char *param(const char *name, size_t len)
{
	size_t i;
	if (!current) {
		return NULL;
	}
	/* The last of duplicates wins, as in $_SERVER (and php-fpm): the pool's env comes first,
	 * a web server's repeated fastcgi_param after its include. */
	for (i = current->nparams; i-- > 0;) {
		const struct fastpm_param *p = &current->params[i];
		if (p->name_len == len && memcmp(p->name, name, len) == 0) {
			return p->value;
		}
	}
	return NULL;
}

#define PARAM(literal) param(literal, sizeof(literal) - 1)

static size_t fastpm_ub_write(const char *str, size_t len)
{
	if (!current) {
		callbacks->log(NULL, str, len);
		return len;
	}
	if (finished) {
		/* php-fpm aborts a script that writes after fastcgi_finish_request() (unless it set
		 * ignore_user_abort); nobody reads it, so fastpm drops it and lets the script finish. */
		return len;
	}
	if (callbacks->write(current->sink, str, len) != 0) {
		php_handle_aborted_connection();
		return 0;
	}
	return len;
}

static void fastpm_flush(void *server_context)
{
	(void) server_context;
	if (current && !finished && callbacks->flush(current->sink) != 0) {
		php_handle_aborted_connection();
	}
}

static char *fastpm_getenv(const char *name, size_t len)
{
	return (char *) param(name, len);
}

static bool is_header(const sapi_header_struct *h, const char *name, size_t len)
{
	return h->header_len > len && strncasecmp(h->header, name, len) == 0;
}

/* The CGI head: `Status:` when the code is not 200 (and the script set none), the headers,
 * a blank line — written in one piece. */
static int fastpm_send_headers(sapi_headers_struct *headers)
{
	smart_str head = {0};
	zend_llist_position pos;
	sapi_header_struct *h;
	bool status_sent = false;
	int code = headers->http_response_code;
	int failed;

	if (SG(request_info).no_headers || finished) {
		return SAPI_HEADER_SENT_SUCCESSFULLY;
	}
	if (code != 200) {
		const char *line = headers->http_status_line;
		const char *space = line ? strchr(line, ' ') : NULL;
		bool has_status = false;
		if (space && space - line >= 5 && strncasecmp(line, "HTTP/", 5) == 0) {
			/* header("HTTP/1.1 404 Gone away"): its own reason, as php-fpm sends it. */
			smart_str_appends(&head, "Status:");
			smart_str_appends(&head, space);
			smart_str_appends(&head, "\r\n");
			code = atoi(space + 1);
		} else {
			for (h = zend_llist_get_first_ex(&headers->headers, &pos); h;
					h = zend_llist_get_next_ex(&headers->headers, &pos)) {
				if (is_header(h, "Status:", sizeof("Status:") - 1)) {
					has_status = true;
					break;
				}
			}
			if (!has_status) {
				/* PHP's own reason phrases (main/http_status_codes.h), as php-fpm's. */
				const http_response_status_code_pair *pair = http_status_map;
				while (pair->code && pair->code != code) {
					pair++;
				}
				smart_str_appends(&head, "Status: ");
				smart_str_append_long(&head, code);
				if (pair->str) {
					smart_str_appendc(&head, ' ');
					smart_str_appends(&head, pair->str);
				}
				smart_str_appends(&head, "\r\n");
			}
		}
	}
	for (h = zend_llist_get_first_ex(&headers->headers, &pos); h;
			h = zend_llist_get_next_ex(&headers->headers, &pos)) {
		if (!h->header_len) {
			continue;
		}
		if (is_header(h, "Status:", sizeof("Status:") - 1)) {
			if (status_sent) {
				continue;
			}
			status_sent = true;
		} else if (code == 304 && is_header(h, "Content-Type:", sizeof("Content-Type:") - 1)) {
			continue;
		}
		smart_str_appendl(&head, h->header, h->header_len);
		smart_str_appends(&head, "\r\n");
	}
	smart_str_appends(&head, "\r\n");
	failed = callbacks->write(current->sink, ZSTR_VAL(head.s), ZSTR_LEN(head.s));
	smart_str_free(&head);
	if (failed) {
		php_handle_aborted_connection();
	}
	return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t fastpm_read_post(char *buffer, size_t count)
{
	size_t left;
	if (!current) {
		return 0;
	}
	left = current->body_len - body_read;
	if (count > left) {
		count = left;
	}
	memcpy(buffer, current->body + body_read, count);
	body_read += count;
	return count;
}

static char *fastpm_read_cookies(void)
{
	return (char *) PARAM("HTTP_COOKIE");
}

static void register_filtered(const char *name, char *value, size_t len, zval *array)
{
	size_t new_len;
	if (sapi_module.input_filter(PARSE_SERVER, name, &value, len, &new_len)) {
		php_register_variable_safe(name, value, new_len, array);
	}
}

/* $_SERVER: the params (Rust puts the process environment, as php-fpm's clear_env makes it,
 * in front of them), then
 * PHP_SELF = SCRIPT_NAME + PATH_INFO as php-fpm builds it. */
static void fastpm_register_variables(zval *array)
{
	size_t i;
	const char *script_name, *path_info;
	char *self;
	size_t name_len, info_len;

	if (!current) {
		return;
	}
	for (i = 0; i < current->nparams; i++) {
		const struct fastpm_param *p = &current->params[i];
		register_filtered(p->name, p->value, p->value_len, array);
	}
	script_name = PARAM("SCRIPT_NAME");
	path_info = PARAM("PATH_INFO");
	name_len = script_name ? strlen(script_name) : 0;
	info_len = path_info ? strlen(path_info) : 0;
	self = emalloc(name_len + info_len + 1);
	memcpy(self, script_name ? script_name : "", name_len);
	memcpy(self + name_len, path_info ? path_info : "", info_len);
	self[name_len + info_len] = '\0';
	register_filtered("PHP_SELF", self, name_len + info_len, array);
	efree(self);
}

static void fastpm_log_message(const char *message, int syslog_type)
{
	(void) syslog_type;
	if (message) {
		callbacks->log(current ? current->sink : NULL, message, strlen(message));
	}
}

/* fastcgi_finish_request(): send the answer and END_REQUEST now; the script goes on. */
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_fastcgi_finish_request, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()

PHP_FUNCTION(fastcgi_finish_request)
{
	ZEND_PARSE_PARAMETERS_NONE();
	if (!current || finished) {
		RETURN_FALSE;
	}
	php_output_end_all();
	php_header();
	finished = true;
	callbacks->finish(current->sink);
	RETURN_TRUE;
}

/* getallheaders() / apache_request_headers(): the HTTP_* params as header names
 * (HTTP_ACCEPT_LANGUAGE -> Accept-Language), with Content-Type and Content-Length, as php-fpm
 * and php-cgi give them. */
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_getallheaders, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()

PHP_FUNCTION(getallheaders)
{
	size_t i;
	ZEND_PARSE_PARAMETERS_NONE();
	array_init(return_value);
	if (!current) {
		return;
	}
	for (i = 0; i < current->nparams; i++) {
		const struct fastpm_param *p = &current->params[i];
		if (p->name_len > 5 && memcmp(p->name, "HTTP_", 5) == 0) {
			size_t j, len = p->name_len - 5;
			char *name = emalloc(len + 1);
			bool word_start = true;
			for (j = 0; j < len; j++) {
				char c = p->name[5 + j];
				if (c == '_') {
					name[j] = '-';
					word_start = true;
				} else {
					name[j] = word_start ? c : (char) tolower((unsigned char) c);
					word_start = false;
				}
			}
			name[len] = '\0';
			add_assoc_stringl_ex(return_value, name, len, p->value, p->value_len);
			efree(name);
		} else if (p->name_len == 12 && memcmp(p->name, "CONTENT_TYPE", 12) == 0) {
			add_assoc_stringl_ex(return_value, "Content-Type", 12, p->value, p->value_len);
		} else if (p->name_len == 14 && memcmp(p->name, "CONTENT_LENGTH", 14) == 0) {
			add_assoc_stringl_ex(return_value, "Content-Length", 14, p->value, p->value_len);
		}
	}
}

static const zend_function_entry fastpm_functions[] = {
	PHP_FE(fastcgi_finish_request, arginfo_fastcgi_finish_request)
	PHP_FE(getallheaders, arginfo_getallheaders)
	PHP_FALIAS(apache_request_headers, getallheaders, arginfo_getallheaders)
	PHP_FE_END
};

/* .user.ini settings of one directory (and of those above it, up to the document root), read
 * again after user_ini.cache_ttl seconds, as php-fpm caches them. Kept across requests. */
struct user_ini {
	HashTable config;
	double expires;
};

static HashTable user_ini_cache;

static void user_ini_free(zval *entry)
{
	struct user_ini *ini = Z_PTR_P(entry);
	zend_hash_destroy(&ini->config);
	free(ini);
}

/* `dir` ends with a '/'. */
static void activate_user_ini(char *dir, size_t dir_len, const char *doc_root)
{
	size_t root_len = strlen(doc_root);
	double now = sapi_get_request_time();
	struct user_ini *ini = zend_hash_str_find_ptr(&user_ini_cache, dir, dir_len);
	if (!ini) {
		ini = malloc(sizeof(*ini));
		if (!ini) {
			return;
		}
		zend_hash_init(&ini->config, 8, NULL, config_zval_dtor, 1);
		ini->expires = 0;
		zend_hash_str_update_ptr(&user_ini_cache, dir, dir_len, ini);
	}
	if (ini->expires <= now) {
		zend_hash_clean(&ini->config);
		while (root_len > 0 && doc_root[root_len - 1] == '/') {
			root_len--;
		}
		if (root_len > 0 && dir_len > root_len && strncmp(dir, doc_root, root_len) == 0
				&& dir[root_len] == '/') {
			/* Each directory from the document root down, the deepest last (it wins). */
			char *slash = dir + root_len;
			while ((slash = strchr(slash, '/')) != NULL) {
				*slash = '\0';
				php_parse_user_ini_file(dir, PG(user_ini_filename), &ini->config);
				*slash = '/';
				slash++;
			}
		} else {
			php_parse_user_ini_file(dir, PG(user_ini_filename), &ini->config);
		}
		ini->expires = now + PG(user_ini_cache_ttl);
	}
	php_ini_activate_config(&ini->config, PHP_INI_PERDIR, PHP_INI_STAGE_HTACCESS);
}

/* At the request's start (php-fpm's sapi_cgi_activate): php.ini's [HOST=] and [PATH=]
 * sections, then the .user.ini files of the script's directory. */
static int fastpm_activate(void)
{
	const char *script = SG(request_info).path_translated;
	const char *host = PARAM("SERVER_NAME");
	const char *doc_root = PARAM("DOCUMENT_ROOT");
	char *dir, *slash;
	size_t dir_len;

	if (!script) {
		return FAILURE;
	}
	if (host && php_ini_has_per_host_config()) {
		char *lower = estrdup(host);
		zend_str_tolower(lower, strlen(lower));
		php_ini_activate_per_host_config(lower, strlen(lower));
		efree(lower);
	}
	if (!php_ini_has_per_dir_config() && !(PG(user_ini_filename) && *PG(user_ini_filename))) {
		return SUCCESS;
	}
	slash = strrchr(script, '/');
	if (!slash) {
		return SUCCESS;
	}
	dir_len = (size_t) (slash - script) + 1;
	dir = estrndup(script, dir_len);
	php_ini_activate_per_dir_config(dir, dir_len);
	if (PG(user_ini_filename) && *PG(user_ini_filename)) {
		activate_user_ini(dir, dir_len, doc_root ? doc_root : "");
	}
	efree(dir);
	return SUCCESS;
}

static int fastpm_startup(sapi_module_struct *module)
{
	return php_module_startup(module, NULL) == SUCCESS ? SUCCESS : FAILURE;
}

static sapi_module_struct fastpm_module = {
	"fpm-fcgi",                   /* name: what php_sapi_name() says, and opcache's check */
	"fastpm (embedded PHP)",      /* pretty name */
	fastpm_startup,
	php_module_shutdown_wrapper,
	fastpm_activate,
	NULL,                         /* deactivate */
	fastpm_ub_write,
	fastpm_flush,
	NULL,                         /* get uid */
	fastpm_getenv,
	php_error,
	NULL,                         /* header handler */
	fastpm_send_headers,
	NULL,                         /* send header */
	fastpm_read_post,
	fastpm_read_cookies,
	fastpm_register_variables,
	fastpm_log_message,
	NULL,                         /* get request time */
	NULL,                         /* terminate process */
	STANDARD_SAPI_MODULE_PROPERTIES
};

/* Module start-up, once per process: php.ini, then `ini_entries` ("name=value\n" lines: the
 * pool's `ini`) over it. `php_ini` (the pool's php_ini): NULL = PHP's own search (the embed
 * build's /etc/php/8.2/embed and its conf.d on Debian), "" = none (-n), else a file or
 * directory (-c). 0 = ready. */
int fastpm_php_startup(const struct fastpm_callbacks *given, const char *ini_entries,
		const char *php_ini)
{
	callbacks = given;
	zend_signal_startup();
	sapi_startup(&fastpm_module);
	fastpm_module.php_ini_ignore_cwd = 1;
	fastpm_module.additional_functions = fastpm_functions;
	if (php_ini && !*php_ini) {
		fastpm_module.php_ini_ignore = 1;
	} else if (php_ini) {
		fastpm_module.php_ini_path_override = strdup(php_ini);
	}
	if (ini_entries && *ini_entries) {
		fastpm_module.ini_entries = strdup(ini_entries);
	}
	if (fastpm_module.startup(&fastpm_module) == FAILURE) {
		return -1;
	}
	zend_hash_init(&user_ini_cache, 8, NULL, user_ini_free, 1);
	return 0;
}

/* PHP_VALUE / PHP_ADMIN_VALUE lines: any directive, as php-fpm sets them (a script's own
 * limits do not apply: upload_max_filesize, post_max_size… are the common ones), for this
 * request only (EG(modified_ini_directives) restores them at its end). An admin value is also
 * locked against the script's ini_set(), as php_admin_value is. `extension=` is refused. */
static void apply_ini_entry(zval *name, zval *value, zval *unused, int type, void *stage)
{
	(void) unused;
	if (type != ZEND_INI_PARSER_ENTRY || !value) {
		return;
	}
	if (zend_string_equals_literal(Z_STR_P(name), "extension")
			|| zend_string_equals_literal(Z_STR_P(name), "zend_extension")) {
		php_error_docref(NULL, E_WARNING, "PHP_VALUE: %s cannot be set per request",
				Z_STRVAL_P(name));
		return;
	}
	if (zend_alter_ini_entry_chars(Z_STR_P(name), Z_STRVAL_P(value), Z_STRLEN_P(value),
			ZEND_INI_SYSTEM, *(int *) stage) == FAILURE) {
		php_error_docref(NULL, E_WARNING, "PHP_VALUE: cannot set %s to \"%s\"",
				Z_STRVAL_P(name), Z_STRVAL_P(value));
	}
}

static void apply_ini(const char *lines, int stage)
{
	char *text;
	if (!lines || !*lines) {
		return;
	}
	spprintf(&text, 0, "%s\n", lines);
	zend_parse_ini_string(text, 1, ZEND_INI_SCANNER_NORMAL, apply_ini_entry, &stage);
	efree(text);
}

/* Run one request: 0, and PHP's exit status in *exit_status; or FASTPM_REQUEST_STARTUP_FAILED
 * when PHP could not start the request (nothing was written then). */
int fastpm_php_run(const struct fastpm_request *request, int *exit_status)
{
	volatile bool started = false;
	const char *length, *auth;

	current = request;
	body_read = 0;
	finished = false;
	SG(server_context) = (void *) request;
	SG(request_info).request_method = PARAM("REQUEST_METHOD");
	SG(request_info).query_string = (char *) PARAM("QUERY_STRING");
	SG(request_info).request_uri = (char *) PARAM("SCRIPT_NAME");
	SG(request_info).content_type = PARAM("CONTENT_TYPE");
	length = PARAM("CONTENT_LENGTH");
	SG(request_info).content_length = length ? ZEND_STRTOL(length, NULL, 10) : 0;
	SG(request_info).path_translated = (char *) request->script;
	SG(request_info).auth_user = NULL;
	SG(request_info).auth_password = NULL;
	SG(request_info).auth_digest = NULL;
	auth = PARAM("HTTP_AUTHORIZATION");
	/* sapi_activate does not reset the code (the SAPI does, php-fpm's too): 200 unless the
	 * request's start (a body over post_max_size) or the script says otherwise. */
	SG(sapi_headers).http_response_code = 200;
	*exit_status = 0;

	zend_first_try {
		php_handle_auth_data(auth);
		apply_ini(PARAM("PHP_VALUE"), PHP_INI_STAGE_HTACCESS);
		apply_ini(PARAM("PHP_ADMIN_VALUE"), PHP_INI_STAGE_ACTIVATE);
		if (php_request_startup() == SUCCESS) {
			zend_file_handle file;
			started = true;
			/* PHP keeps the last script's exit() code otherwise (php-fpm resets it too). */
			EG(exit_status) = 0;
			zend_stream_init_filename(&file, request->script);
			file.primary_script = 1;
			php_execute_script(&file);
			zend_destroy_file_handle(&file);
		}
	} zend_end_try();
	if (started) {
		*exit_status = EG(exit_status);
		php_request_shutdown(NULL);
	}
	SG(server_context) = NULL;
	SG(request_info).path_translated = NULL;
	SG(request_info).query_string = NULL;
	SG(request_info).request_uri = NULL;
	current = NULL;
	return started ? 0 : FASTPM_REQUEST_STARTUP_FAILED;
}
