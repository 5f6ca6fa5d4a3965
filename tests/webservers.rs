//! fastpm behind the three web servers people put in front of php-fpm — Apache httpd
//! (mod_proxy_fcgi, `SetHandler "proxy:unix:…|fcgi://localhost"` and the `proxy:balancer://`
//! form), lighttpd (mod_fastcgi) and nginx (tests/php_nginx.rs) — each configured as its Debian
//! package documents for php-fpm, all run for real. Every request goes once through fastpm
//! (`kind = "php"`, real php-cgi) and once through the real php-fpm behind the same server
//! config, and must give the same status and the same bytes; fastpm's answers are also checked
//! against what the script must print, so a wrong answer shared by both still fails.

mod common;

use std::path::{Path, PathBuf};

use common::apache::{open_to_www_data, Apache};
use common::lighttpd::Lighttpd;
use common::nginx::curl;
use common::php_fpm::PhpFpm;
use common::{raw, require, Server};

/// Settings both fastpm's php-cgi and php-fpm get (large bodies for the upload).
const INI: [(&str, &str); 2] = [("post_max_size", "64M"), ("upload_max_filesize", "64M")];

/// A copy of php-examples plus the scripts these tests need, in a directory httpd's www-data
/// workers can traverse.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// A 1 MiB file for the multipart upload, and its md5.
    upload: PathBuf,
    upload_md5: String,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let root = base.join("www");
    std::fs::create_dir_all(&root).unwrap();
    common::php_pages::copy_examples(&root);
    // What PHP made of the path: the same through fastpm as through php-fpm.
    std::fs::write(
        root.join("pathinfo.php"),
        "<?php header('Content-Type: text/plain');\n\
         foreach (['SCRIPT_FILENAME', 'SCRIPT_NAME', 'PATH_INFO', 'PHP_SELF', 'ORIG_SCRIPT_NAME',\n\
                   'ORIG_PATH_INFO', 'QUERY_STRING', 'REQUEST_URI'] as $k) {\n\
             echo $k, '=', $_SERVER[$k] ?? '(unset)', \"\\n\";\n\
         }\n",
    )
    .unwrap();
    // Debian's httpd snippet hands .phtml to php-fpm too; limit_extensions refuses it.
    std::fs::write(root.join("page.phtml"), "<?php echo 'PHTML RAN';").unwrap();
    open_to_www_data(&root);
    let upload = base.join("upload.bin");
    let bytes: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&upload, &bytes).unwrap();
    let upload_md5 = common::php_pages::md5_of(&upload);
    Site {
        _dir: dir,
        root,
        upload,
        upload_md5,
    }
}

/// Where fastpm runs PHP: php-cgi (the default layout, worker threads) or inside its worker
/// processes (`php_children = "embedded"`).
#[derive(Clone, Copy)]
enum Php {
    Cgi,
    Embedded,
}

impl Php {
    /// The pool's `workers` and the app's `php_children`.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Php::Cgi => ("thread", "shared"),
            Php::Embedded => ("process", "embedded"),
        }
    }
}

/// fastpm with one php pool on `<dir>/p.sock`, owned by www-data with mode 0660 — what
/// Debian's php-fpm pool does (`listen.owner = www-data`) so that httpd's workers, which run as
/// www-data, can connect, and nobody else can.
fn start_fastpm(site: &Site, php: Php) -> Server {
    let (workers, php_children) = php.keys();
    let php_cgi = require("php-cgi");
    let ini: Vec<String> = INI.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.p]
workers = "{workers}"
max_children = 2

[pool.p.listen]
address = "unix:{{dir}}/p.sock"
owner = "www-data"
group = "www-data"
mode = "0660"

[pool.p.app]
kind = "php"
php_cgi = "{php_cgi}"
php_children = "{php_children}"
document_root = "{root}"
ini = {{ {ini} }}
"#,
        php_cgi = php_cgi.display(),
        root = site.root.display(),
        ini = ini.join(", "),
    );
    let server = Server::start(&config);
    open_to_www_data(server.dir.path());
    server
}

/// What one request gave: status and body.
type Answer = (u16, String);

/// GET `path`.
fn get(port: u16, path: &str) -> Answer {
    let (code, body) = curl(&[], &format!("http://127.0.0.1:{port}{path}"));
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// The requests every web server must pass through, with the answer fastpm must give
/// (`forbidden`: a path the server hands to the FastCGI app whose script is not a .php file,
/// when the server has one). A missing script is 404 from the FastCGI app, or from the server
/// itself when it checks that the file exists (`app_sees_missing` false: lighttpd).
fn exercise(
    port: u16,
    site: &Site,
    forbidden: Option<&str>,
    app_sees_missing: bool,
) -> Vec<(String, Answer)> {
    let mut answers = Vec::new();
    let base = format!("http://127.0.0.1:{port}");

    let hello = get(port, "/hello.php");
    assert_eq!(hello, (200, "Hello from PHP\n".into()), "GET /hello.php");
    answers.push(("GET /hello.php".into(), hello));

    let query = get(port, "/post.php?echo=1");
    assert_eq!(query.0, 200, "{}", query.1);
    assert!(query.1.starts_with("method=GET\nlength=0\n"), "{}", query.1);
    answers.push(("GET /post.php?echo=1".into(), query));

    let (code, body) = curl(&["-d", "a=1&b=two+words"], &format!("{base}/post.php"));
    let form = (code, String::from_utf8_lossy(&body).into_owned());
    assert_eq!(form.0, 200, "{}", form.1);
    assert!(
        form.1.contains("method=POST\nlength=15\n")
            && form.1.contains("post[a]=1\npost[b]=two words\n"),
        "POST form: {}",
        form.1
    );
    answers.push(("POST form /post.php".into(), form));

    let field = format!("file=@{}", site.upload.display());
    let (code, body) = curl(&["-F", &field], &format!("{base}/upload.php"));
    let upload = (code, String::from_utf8_lossy(&body).into_owned());
    assert_eq!(upload.0, 200, "{}", upload.1);
    let want = format!(
        "field=file\nname=upload.bin\nerror=0\nsize={}\nmd5={}\n",
        1 << 20,
        site.upload_md5
    );
    assert_eq!(upload.1, want, "multipart upload");
    answers.push(("multipart /upload.php".into(), upload));

    let info = get(port, "/pathinfo.php/extra/path?q=1");
    assert_eq!(info.0, 200, "{}", info.1);
    let script = site.root.join("pathinfo.php");
    for line in [
        format!("SCRIPT_FILENAME={}\n", script.display()),
        "SCRIPT_NAME=/pathinfo.php\n".to_string(),
        "PATH_INFO=/extra/path\n".to_string(),
        "PHP_SELF=/pathinfo.php/extra/path\n".to_string(),
        "QUERY_STRING=q=1\n".to_string(),
    ] {
        assert!(
            info.1.contains(&line),
            "PATH_INFO: want {line:?} in {}",
            info.1
        );
    }
    answers.push(("GET /pathinfo.php/extra/path?q=1".into(), info));

    let missing = get(port, "/missing.php");
    assert_eq!(missing.0, 404, "missing script: {}", missing.1);
    assert_eq!(
        missing.1 == "File not found.\n",
        app_sees_missing,
        "who answered the missing script: {}",
        missing.1
    );
    answers.push(("GET /missing.php".into(), missing));

    if let Some(forbidden) = forbidden {
        let refused = get(port, forbidden);
        assert_eq!(refused, (403, "Access denied.\n".into()), "GET {forbidden}");
        answers.push((format!("GET {forbidden}"), refused));
    }
    answers
}

/// `exercise` through fastpm and through php-fpm behind web servers made by `serve` (given
/// the socket to pass to): same statuses, same bytes.
/// `fastpm_only` runs against fastpm's web server too, for answers php-fpm does not share.
fn compare_with_php_fpm(
    php: Php,
    site: &Site,
    forbidden: Option<&str>,
    app_sees_missing: bool,
    serve: impl Fn(&Path, &str, &Path) -> Box<dyn WebServer>,
    fastpm_only: impl Fn(u16),
) {
    let fastpm = start_fastpm(site, php);
    let ours = {
        let web = serve(fastpm.dir.path(), "fastpm", &fastpm.path("p.sock"));
        fastpm_only(web.port());
        exercise(web.port(), site, forbidden, app_sees_missing)
    };
    let fpm_dir = tempfile::tempdir().unwrap();
    open_to_www_data(fpm_dir.path());
    let fpm = PhpFpm::start(fpm_dir.path(), "www-data", 2, &INI);
    let theirs = {
        let web = serve(fpm_dir.path(), "php-fpm", &fpm.socket);
        exercise(web.port(), site, forbidden, app_sees_missing)
    };
    for ((what, a), (_, b)) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "{what}: fastpm (left) and php-fpm (right) differ");
    }
    assert_eq!(ours.len(), theirs.len());
}

/// A web server under test, whatever its kind.
trait WebServer {
    fn port(&self) -> u16;
}
impl WebServer for Apache {
    fn port(&self) -> u16 {
        self.port
    }
}
impl WebServer for Lighttpd {
    fn port(&self) -> u16 {
        self.port
    }
}

/// Debian's /etc/apache2/conf-available/php8.2-fpm.conf, with the socket path and `handler`
/// (`proxy:unix:SOCK|fcgi://localhost` or `proxy:balancer://NAME`) filled in.
fn apache_php_fpm_snippet(handler: &str) -> String {
    format!(
        r#"
<IfModule setenvif_module>
SetEnvIfNoCase ^Authorization$ "(.+)" HTTP_AUTHORIZATION=$1
</IfModule>
<FilesMatch ".+\.ph(?:ar|p|tml)$">
    SetHandler "{handler}"
</FilesMatch>
<FilesMatch ".+\.phps$">
    Require all denied
</FilesMatch>
<FilesMatch "^\.ph(?:ar|p|ps|tml)$">
    Require all denied
</FilesMatch>
"#
    )
}

#[test]
fn apache_set_handler_proxy_unix_fcgi() {
    apache_set_handler(Php::Cgi);
}

/// The same with PHP inside fastpm's worker processes.
#[test]
fn apache_set_handler_proxy_unix_fcgi_embedded_php() {
    apache_set_handler(Php::Embedded);
}

fn apache_set_handler(php: Php) {
    let site = site();
    compare_with_php_fpm(
        php,
        &site,
        Some("/page.phtml"),
        true,
        |dir, name, socket| {
            let handler = format!("proxy:unix:{}|fcgi://localhost", socket.display());
            Box::new(Apache::start(
                dir,
                name,
                &site.root,
                &apache_php_fpm_snippet(&handler),
            ))
        },
        |_| {},
    );
}

/// The same through mod_proxy_balancer, plus a `ProxyPassMatch` location (where httpd cannot
/// send PATH_INFO and leaves it on SCRIPT_FILENAME, for the FastCGI server to split off).
#[test]
fn apache_proxy_balancer() {
    let site = site();
    let root = site.root.display().to_string();
    let proxy_pass_answers = |port: u16| {
        let answer = get(port, "/pp/pathinfo.php/a/b?z=2");
        assert_eq!(answer.0, 200, "ProxyPassMatch: {}", answer.1);
        for line in [
            format!("SCRIPT_FILENAME={root}/pathinfo.php\n"),
            "PATH_INFO=/a/b\n".to_string(),
            "SCRIPT_NAME=/pp/pathinfo.php\n".to_string(),
            "ORIG_SCRIPT_NAME=/pp/pathinfo.php/a/b\n".to_string(),
            "QUERY_STRING=z=2\n".to_string(),
        ] {
            assert!(
                answer.1.contains(&line),
                "ProxyPassMatch: want {line:?} in {}",
                answer.1
            );
        }
        let hello = get(port, "/pp/hello.php");
        assert_eq!(hello, (200, "Hello from PHP\n".into()));
        let missing = get(port, "/pp/missing.php/x");
        (answer, missing)
    };
    let config = |socket: &Path| {
        format!(
            r#"
<Proxy "balancer://php">
    BalancerMember "unix:{sock}|fcgi://localhost"
</Proxy>
{snippet}
ProxyPassMatch "^/pp/(.*\.php(/.*)?)$" "unix:{sock}|fcgi://localhost{root}/$1"
"#,
            sock = socket.display(),
            snippet = apache_php_fpm_snippet("proxy:balancer://php"),
        )
    };
    let fastpm = start_fastpm(&site, Php::Cgi);
    let (ours, ours_pp) = {
        let web = Apache::start(
            fastpm.dir.path(),
            "fastpm",
            &site.root,
            &config(&fastpm.path("p.sock")),
        );
        (
            exercise(web.port, &site, Some("/page.phtml"), true),
            proxy_pass_answers(web.port),
        )
    };
    // httpd 2.4 rewrites a balancer member's SCRIPT_FILENAME to the member's own
    // `proxy:fcgi://localhost/…`; older ones sent `proxy:balancer://php/…`, which php-fpm and
    // fastpm accept too: sent here directly.
    let direct = format!("proxy:balancer://php{root}/hello.php");
    let r = raw::get_script(&fastpm.path("p.sock"), "/hello.php", &direct);
    assert_eq!(r.body(), "Hello from PHP\n", "{direct}: {}", r.text());

    let fpm_dir = tempfile::tempdir().unwrap();
    open_to_www_data(fpm_dir.path());
    let fpm = PhpFpm::start(fpm_dir.path(), "www-data", 2, &INI);
    let (theirs, theirs_pp) = {
        let web = Apache::start(fpm_dir.path(), "php-fpm", &site.root, &config(&fpm.socket));
        (
            exercise(web.port, &site, Some("/page.phtml"), true),
            proxy_pass_answers(web.port),
        )
    };
    let r = raw::get_script(&fpm.socket, "/hello.php", &direct);
    assert_eq!(r.body(), "Hello from PHP\n", "php-fpm: {}", r.text());
    for ((what, a), (_, b)) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "{what}: fastpm (left) and php-fpm (right) differ");
    }
    assert_eq!(
        ours_pp, theirs_pp,
        "ProxyPassMatch: fastpm (left), php-fpm (right)"
    );
}

/// Debian's /etc/lighttpd/conf-available/15-fastcgi-php-fpm.conf with the socket filled in.
/// lighttpd hands over only paths whose file ends in .php, so the limit_extensions case is a
/// `.php` symlink to a text file: fastpm checks the real path (403), php-fpm does not (it runs
/// the text), so that answer is checked on fastpm alone.
#[test]
fn lighttpd_fastcgi_php_fpm() {
    lighttpd_fastcgi(Php::Cgi);
}

/// The same with PHP inside fastpm's worker processes.
#[test]
fn lighttpd_fastcgi_embedded_php() {
    lighttpd_fastcgi(Php::Embedded);
}

fn lighttpd_fastcgi(php: Php) {
    let site = site();
    std::os::unix::fs::symlink(
        site.root.join("notes.txt"),
        site.root.join("notes-link.php"),
    )
    .unwrap();
    compare_with_php_fpm(
        php,
        &site,
        None,
        false,
        |dir, name, socket| {
            let conf = format!(
                r#"
fastcgi.server += ( ".php" =>
    ((
        "socket" => "{}",
        "broken-scriptfilename" => "enable"
    ))
)
"#,
                socket.display()
            );
            Box::new(Lighttpd::start(dir, name, &site.root, &conf))
        },
        |port| {
            let refused = get(port, "/notes-link.php");
            assert_eq!(
                refused,
                (403, "Access denied.\n".into()),
                "a .php link to a .txt"
            );
        },
    );
}

/// `kind = "cgi"` resolves SCRIPT_FILENAME the same way: behind httpd (SetHandler for `.cgi`,
/// and `ProxyPassMatch`, where the path info comes on the end of SCRIPT_FILENAME) the script
/// runs with the real SCRIPT_FILENAME and PATH_INFO.
#[test]
fn apache_in_front_of_a_cgi_pool() {
    use std::os::unix::fs::PermissionsExt;
    require("sh");
    let site = site();
    let script = site.root.join("env.cgi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         printf 'SCRIPT_FILENAME=%s\\nSCRIPT_NAME=%s\\nPATH_INFO=%s\\n' \
         \"$SCRIPT_FILENAME\" \"$SCRIPT_NAME\" \"$PATH_INFO\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        r#"
[global]
status_listen = ""
runtime_dir = "{{dir}}/rt"

[pool.c]
workers = "thread"
max_children = 2

[pool.c.listen]
address = "unix:{{dir}}/c.sock"
owner = "www-data"
group = "www-data"
mode = "0660"

[pool.c.app]
kind = "cgi"
document_root = "{}"
"#,
        site.root.display()
    );
    let server = Server::start(&config);
    open_to_www_data(server.dir.path());
    let sock = server.path("c.sock");
    let root = site.root.display();
    let web = Apache::start(
        server.dir.path(),
        "cgi",
        &site.root,
        &format!(
            r#"
<FilesMatch ".+\.cgi$">
    SetHandler "proxy:unix:{sock}|fcgi://localhost"
</FilesMatch>
ProxyPassMatch "^/pp/(.*\.cgi(/.*)?)$" "unix:{sock}|fcgi://localhost{root}/$1"
"#,
            sock = sock.display()
        ),
    );
    let want = |name: &str, info: &str| {
        (
            200,
            format!(
                "SCRIPT_FILENAME={}\nSCRIPT_NAME={name}\nPATH_INFO={info}\n",
                script.display()
            ),
        )
    };
    assert_eq!(get(web.port, "/env.cgi"), want("/env.cgi", ""));
    assert_eq!(
        get(web.port, "/env.cgi/extra/path"),
        want("/env.cgi", "/extra/path")
    );
    assert_eq!(
        get(web.port, "/pp/env.cgi/a/b"),
        want("/pp/env.cgi", "/a/b")
    );
    assert_eq!(get(web.port, "/missing.cgi").0, 404);
}
