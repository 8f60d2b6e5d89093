/*
 * eifbuild init: PID 1 of a Nitro Enclave image (EIF).
 *
 * It follows the boot contract of AWS's init.c (aws-nitro-enclaves-sdk-bootstrap, init/init.c):
 *
 *   1. block every signal in PID 1;
 *   2. mount devtmpfs on /dev and reopen stdin/stdout/stderr on /dev/console;
 *   3. load /nsm.ko with finit_module() if the file exists (absent: NSM is built into the kernel),
 *      then delete it;
 *   4. heartbeat: connect AF_VSOCK to CID 3 (the parent instance) port 9000, send 0xB7, expect
 *      0xB7 back;
 *   5. read /cmd (argv) and /env (the whole environment), one entry per line, and delete them;
 *      an empty file means argv {"sh"} or env {"PATH=/sbin:/usr/sbin:/bin:/usr/bin"};
 *   6. bring the loopback interface up (not in AWS's init: see below);
 *   7. switch root into /rootfs (bind mount, move onto /, chroot) and mount there: devtmpfs on
 *      /dev, proc on /proc, the /dev/fd and /dev/std* links, tmpfs on /run, /tmp and /dev/shm,
 *      devpts on /dev/pts, sysfs on /sys, tmpfs on /sys/fs/cgroup and one cgroup-v1 hierarchy
 *      per enabled controller in /proc/cgroups;
 *   8. fork the command (new session, signals unblocked, environment exactly /env), reap every
 *      child until the command exits, then reboot, which ends the enclave;
 *   9. fail closed: any setup error exits PID 1, and the kernel panics.
 *
 * Differences from AWS's init.c, each on purpose:
 *
 *   - A bare command name (no '/') is looked up in the PATH from /env first, then in the fixed
 *     list /sbin:/usr/sbin:/bin:/usr/bin that AWS's init always uses, so every command AWS's init
 *     finds is still found. ENOEXEC is not retried through /bin/sh (musl's execvpe doesn't either).
 *   - Local runs: when the kernel command line contains the word "eifbuild.local=1" (added by
 *     `eifbuild boot`), a vsock heartbeat that cannot connect (no vsock device, no listener) is
 *     logged and skipped, and when the command exits the machine is powered off instead of
 *     rebooted on aarch64 (PSCI), so QEMU exits. x86 kernels without ACPI (the demo kernel) cannot
 *     power off, so x86 still reboots and QEMU's -no-reboot ends the run. A real enclave's command
 *     line lacks the flag (it is part of the measured image: adding it changes PCR0/PCR1), so
 *     there the heartbeat stays mandatory. The command line is read from /proc/cmdline, which
 *     needs a short proc mount on /proc in the initial root; if that fails, the mode is not local.
 *   - Every failure prints one line "eifbuild-init: fatal: <what>: <why>" on the console before
 *     PID 1 exits. A missing /cmd or /env is a clean fatal error (AWS's init crashes on it), and a
 *     command that cannot be run prints "eifbuild-init: cannot run <cmd>: <why>".
 *   - The command's exit status or signal is printed before the reboot.
 *   - Attestation check: when the kernel command line contains the word "eifbuild.attest=1"
 *     (added by `eifbuild boot --attest` through QEMU's -append, which is not measured), init
 *     reads PCR0, 1, 2 and 8 from /dev/nsm with DescribePCR requests (NSM_IOCTL_RAW, CBOR) after
 *     the heartbeat and prints one line per PCR: "eifbuild-init: attest: PCR<n> locked|unlocked
 *     <hex>", or "eifbuild-init: attest: unavailable: <why>" without an NSM device. Then it asks
 *     the NSM for an attestation document (an Attestation request with the nonce the host passed
 *     as "eifbuild.nonce=<hex>", 1 to 64 bytes, also unmeasured; null without one) and prints it
 *     base64-encoded in numbered lines of at most 384 characters: "eifbuild-init: attest:
 *     document <k>/<n> <base64>" (the console: no extra vsock port the parent would have to
 *     serve), or "eifbuild-init: attest: document error: <why>". It changes nothing else: the
 *     command runs either way.
 *   - Loopback: before switching root, the loopback interface "lo" is brought up (SIOCSIFFLAGS
 *     IFF_UP), so the kernel gives it 127.0.0.1/8 and, with IPv6, ::1: an app can serve on
 *     127.0.0.1 behind a vsock bridge. AWS's init leaves lo down. A kernel without networking (no
 *     socket family to ask with) or without lo is left as it is; any other failure is fatal.
 *   - setpgid(0, 0) after setsid() is not called: setsid() already made the child a process group
 *     leader (and setpgid would fail with EPERM).
 *
 * Build (static musl, reproducible): zig cc -target <arch>-linux-musl -static -O2 -s
 *   -Wall -Wextra -Werror
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>
#include <net/if.h>

#define DEFAULT_PATH "/sbin:/usr/sbin:/bin:/usr/bin"
#define NSM_MODULE "nsm.ko" /* relative to the initial root, like AWS's init */
#define VSOCK_PARENT_CID 3
#define VSOCK_READY_PORT 9000
#define HEARTBEAT 0xB7
#define LOCAL_FLAG "eifbuild.local=1"
#define ATTEST_FLAG "eifbuild.attest=1"
#define NONCE_PREFIX "eifbuild.nonce="
#define NONCE_MAX 64 /* bytes; the host sends 32 */
#define DOCUMENT_LINE 384 /* base64 characters per console line (288 bytes) */
#define NSM_DEVICE "/dev/nsm"
#define NSM_RESPONSE_MAX 0x3000
#define MAX_LINE_FILE (16u << 20) /* /cmd and /env: more than this is not a command line */

static int local_mode;
static int attest_mode;
static unsigned char nonce[NONCE_MAX];
static int nonce_len = -1; /* -1: no eifbuild.nonce= word; -2: one that is not 1..64 bytes of hex */

static void vsay(const char *prefix, const char *fmt, va_list ap, int err)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "eifbuild-init: %s", prefix);
    if (n < 0)
        return;
    if ((size_t)n < sizeof buf) {
        int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof buf - 2)
        n = (int)sizeof buf - 2;
    if (err) {
        int m = snprintf(buf + n, sizeof buf - (size_t)n, ": %s", strerror(err));
        if (m > 0)
            n += m;
        if ((size_t)n >= sizeof buf - 2)
            n = (int)sizeof buf - 2;
    }
    buf[n++] = '\n';
    (void)!write(STDERR_FILENO, buf, (size_t)n);
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay("", fmt, ap, 0);
    va_end(ap);
}

/* Fail closed: report and exit PID 1, which makes the kernel panic. */
__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    vsay("fatal: ", fmt, ap, err);
    va_end(ap);
    _exit(err ? err : 1);
}

/* Like die() but without an errno part. */
__attribute__((format(printf, 1, 2), noreturn)) static void die_plain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay("fatal: ", fmt, ap, 0);
    va_end(ap);
    _exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static void mount_dev(const char *where)
{
    if (mount("dev", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
        die("mount devtmpfs on %s/dev", where);
}

static void open_console(void)
{
    int in = open("/dev/console", O_RDONLY | O_NOCTTY);
    if (in < 0)
        die("open /dev/console");
    int out = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (out < 0)
        die("open /dev/console");
    if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
        die("redirect stdio to /dev/console");
    if (in > STDERR_FILENO)
        close(in);
    if (out > STDERR_FILENO)
        close(out);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The nonce from "eifbuild.nonce=<hex>": 1 to NONCE_MAX bytes, else nonce_len = -2. */
static void parse_nonce(const char *hex)
{
    size_t len = strlen(hex);
    nonce_len = -2;
    if (len == 0 || len % 2 != 0 || len > 2 * NONCE_MAX)
        return;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return;
        nonce[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    nonce_len = (int)(len / 2);
}

/* Set local_mode, attest_mode and the nonce from the kernel command line (whole words only). */
static void read_cmdline_flags(void)
{
    char buf[4096];
    int created = mkdir("/proc", 0555) == 0;
    if (mount("proc", "/proc", "proc", MS_NODEV | MS_NOSUID | MS_NOEXEC, NULL) != 0) {
        say("cannot mount proc to read the kernel command line (%s): not a local run", strerror(errno));
        return;
    }
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            for (char *tok = strtok(buf, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
                if (strcmp(tok, LOCAL_FLAG) == 0)
                    local_mode = 1;
                if (strcmp(tok, ATTEST_FLAG) == 0)
                    attest_mode = 1;
                if (strncmp(tok, NONCE_PREFIX, strlen(NONCE_PREFIX)) == 0)
                    parse_nonce(tok + strlen(NONCE_PREFIX));
            }
        }
    }
    if (umount("/proc") != 0)
        die("umount /proc");
    if (created)
        rmdir("/proc");
}

static void load_nsm(void)
{
    int fd = open(NSM_MODULE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            say("no /nsm.ko: using the kernel's own NSM driver, if any");
            return;
        }
        die("open /nsm.ko");
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0)
        die("load the NSM driver /nsm.ko (does it match the kernel?)");
    close(fd);
    if (unlink(NSM_MODULE) != 0)
        say("warning: cannot delete /nsm.ko (%s)", strerror(errno));
}

/* Tell the parent instance that the enclave booted. Returns only on success or a skipped
 * heartbeat in local mode. */
static void heartbeat(void)
{
    struct sockaddr_vm addr = {0};
    unsigned char byte = HEARTBEAT;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VSOCK_PARENT_CID;
    addr.svm_port = VSOCK_READY_PORT;
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (local_mode) {
            say("no vsock peer at CID %d port %d (%s): heartbeat skipped (" LOCAL_FLAG ")",
                VSOCK_PARENT_CID, VSOCK_READY_PORT, strerror(errno));
            if (fd >= 0)
                close(fd);
            return;
        }
        die("heartbeat: connect to vsock CID %d port %d", VSOCK_PARENT_CID, VSOCK_READY_PORT);
    }
    if (write(fd, &byte, 1) != 1)
        die("heartbeat: send");
    if (read(fd, &byte, 1) != 1)
        die("heartbeat: receive");
    if (byte != HEARTBEAT)
        die_plain("heartbeat: the parent answered 0x%02x, expected 0x%02x", byte, HEARTBEAT);
    close(fd);
}

/* -- attestation check (eifbuild.attest=1): DescribePCR over NSM_IOCTL_RAW --------------------- */
struct nsm_iovec {
    uint64_t addr;
    uint64_t len;
};
struct nsm_raw {
    struct nsm_iovec request;
    struct nsm_iovec response;
};
#define NSM_IOCTL_RAW _IOWR(0x0A, 0, struct nsm_raw) /* include/uapi/linux/nsm.h */

/* A cursor over CBOR bytes: definite lengths only, which is all the NSM sends. */
struct cbor {
    const unsigned char *p, *end;
};

/* Read an item's head: its major type and argument (a length, a count or a value). */
static int cbor_head(struct cbor *c, unsigned *major, uint64_t *arg)
{
    if (c->p >= c->end)
        return -1;
    unsigned char first = *c->p++;
    unsigned info = first & 31, size = info < 24 ? 0 : info == 24 ? 1 : info == 25 ? 2 : info == 26 ? 4 : 8;
    *major = first >> 5;
    if (info > 27 || (size_t)(c->end - c->p) < size)
        return -1;
    *arg = info < 24 ? info : 0;
    for (unsigned i = 0; i < size; i++)
        *arg = *arg << 8 | *c->p++;
    return 0;
}

static int cbor_skip(struct cbor *c, int depth)
{
    unsigned major;
    uint64_t arg;
    if (depth > 8 || cbor_head(c, &major, &arg) != 0)
        return -1;
    if (major == 2 || major == 3) {
        if (arg > (uint64_t)(c->end - c->p))
            return -1;
        c->p += arg;
    } else if (major == 4 || major == 5) {
        for (uint64_t i = 0; i < (major == 5 ? 2 * arg : arg); i++)
            if (cbor_skip(c, depth + 1) != 0)
                return -1;
    } else if (major == 6) {
        return cbor_skip(c, depth + 1);
    }
    return 0;
}

/* A text or byte string of the given major type; its bytes stay in the buffer. */
static int cbor_string(struct cbor *c, unsigned want, const unsigned char **s, size_t *len)
{
    unsigned major;
    uint64_t arg;
    if (cbor_head(c, &major, &arg) != 0 || major != want || arg > (uint64_t)(c->end - c->p))
        return -1;
    *s = c->p;
    *len = (size_t)arg;
    c->p += arg;
    return 0;
}

static int cbor_key_is(struct cbor *c, const char *key)
{
    const unsigned char *s;
    size_t len;
    return cbor_string(c, 3, &s, &len) == 0 && len == strlen(key) && memcmp(s, key, len) == 0;
}

/* Enter a response {name: {...}}: on success the cursor is past the inner map's head and `count`
 * is its number of pairs; an {"Error": text} is put in `error`. */
static int cbor_response(struct cbor *c, const char *name, uint64_t *count, char *error, size_t error_size)
{
    unsigned major;
    uint64_t outer;
    if (cbor_head(c, &major, &outer) != 0 || major != 5 || outer != 1)
        return -1;
    const unsigned char *key = c->p;
    if (!cbor_key_is(c, name)) {
        struct cbor text = {key, c->end};
        const unsigned char *s;
        size_t n;
        if (cbor_key_is(&text, "Error") && cbor_string(&text, 3, &s, &n) == 0)
            snprintf(error, error_size, "the NSM answered %.*s", (int)n, (const char *)s);
        return -1;
    }
    return cbor_head(c, &major, count) != 0 || major != 5 ? -1 : 0;
}

/* Parse {"DescribePCR": {"lock": bool, "data": bytes}}; an {"Error": text} is put in `error`. */
static int parse_describe_pcr(struct cbor *c, int *lock, const unsigned char **data, size_t *len,
                              char *error, size_t error_size)
{
    unsigned major;
    uint64_t inner;
    if (cbor_response(c, "DescribePCR", &inner, error, error_size) != 0)
        return -1;
    *lock = -1;
    *data = NULL;
    for (uint64_t i = 0; i < inner; i++) {
        const unsigned char *k;
        size_t klen;
        if (cbor_string(c, 3, &k, &klen) != 0)
            return -1;
        if (klen == 4 && memcmp(k, "lock", 4) == 0) {
            uint64_t value;
            if (cbor_head(c, &major, &value) != 0 || major != 7 || (value != 20 && value != 21))
                return -1;
            *lock = value == 21;
        } else if (klen == 4 && memcmp(k, "data", 4) == 0) {
            if (cbor_string(c, 2, data, len) != 0)
                return -1;
        } else if (cbor_skip(c, 0) != 0) {
            return -1;
        }
    }
    return *lock < 0 || !*data ? -1 : 0;
}

static void describe_pcr(int nsm, unsigned index)
{
    /* {"DescribePCR": {"index": index}} for index < 24: a fixed CBOR prefix and one byte. */
    unsigned char request[] = {0xA1, 0x6B, 'D', 'e', 's', 'c', 'r', 'i', 'b', 'e', 'P', 'C', 'R',
                               0xA1, 0x65, 'i', 'n', 'd', 'e', 'x', (unsigned char)index};
    static unsigned char response[NSM_RESPONSE_MAX];
    struct nsm_raw raw = {{(uintptr_t)request, sizeof request}, {(uintptr_t)response, sizeof response}};
    if (ioctl(nsm, NSM_IOCTL_RAW, &raw) != 0) {
        say("attest: PCR%u error: ioctl NSM_IOCTL_RAW: %s", index, strerror(errno));
        return;
    }
    struct cbor c = {response, response + (raw.response.len < sizeof response ? raw.response.len : sizeof response)};
    char error[128] = "cannot parse the NSM's answer";
    const unsigned char *data;
    size_t len;
    int lock;
    if (parse_describe_pcr(&c, &lock, &data, &len, error, sizeof error) != 0 || len > 64) {
        say("attest: PCR%u error: %s", index, error);
        return;
    }
    char hex[129];
    for (size_t i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", data[i]);
    hex[2 * len] = '\0';
    say("attest: PCR%u %s %s", index, lock ? "locked" : "unlocked", hex);
}

/* Parse {"Attestation": {"document": bytes}}; an {"Error": text} is put in `error`. */
static int parse_attestation(struct cbor *c, const unsigned char **doc, size_t *len, char *error,
                             size_t error_size)
{
    uint64_t inner;
    if (cbor_response(c, "Attestation", &inner, error, error_size) != 0)
        return -1;
    *doc = NULL;
    for (uint64_t i = 0; i < inner; i++) {
        if (cbor_key_is(c, "document")) {
            if (cbor_string(c, 2, doc, len) != 0)
                return -1;
        } else if (cbor_skip(c, 0) != 0) {
            return -1;
        }
    }
    return *doc ? 0 : -1;
}

/* Print `data` base64-encoded, DOCUMENT_LINE characters per line, each line numbered k/n. */
static void print_document(const unsigned char *data, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const size_t per_line = DOCUMENT_LINE / 4 * 3;
    size_t lines = (len + per_line - 1) / per_line;
    for (size_t k = 0; k < lines; k++) {
        char text[DOCUMENT_LINE + 1];
        size_t n = 0, start = k * per_line, end = start + per_line < len ? start + per_line : len;
        for (size_t i = start; i < end; i += 3) {
            size_t left = end - i;
            uint32_t v = (uint32_t)data[i] << 16 | (left > 1 ? (uint32_t)data[i + 1] << 8 : 0) |
                         (left > 2 ? data[i + 2] : 0);
            text[n++] = alphabet[v >> 18 & 63];
            text[n++] = alphabet[v >> 12 & 63];
            text[n++] = left > 1 ? alphabet[v >> 6 & 63] : '=';
            text[n++] = left > 2 ? alphabet[v & 63] : '=';
        }
        text[n] = '\0';
        say("attest: document %zu/%zu %s", k + 1, lines, text);
    }
}

/* Ask the NSM for an attestation document carrying the host's nonce and print it. */
static void attestation_document(int nsm)
{
    /* {"Attestation": {"user_data": null, "nonce": <bytes>|null, "public_key": null}} */
    static const unsigned char head[] = {0xA1, 0x6B, 'A', 't', 't', 'e', 's', 't', 'a', 't', 'i', 'o', 'n',
                                         0xA3, 0x69, 'u', 's', 'e', 'r', '_', 'd', 'a', 't', 'a', 0xF6,
                                         0x65, 'n', 'o', 'n', 'c', 'e'};
    static const unsigned char tail[] = {0x6A, 'p', 'u', 'b', 'l', 'i', 'c', '_', 'k', 'e', 'y', 0xF6};
    static unsigned char response[NSM_RESPONSE_MAX];
    unsigned char request[sizeof head + 2 + NONCE_MAX + sizeof tail];
    size_t n = sizeof head;
    if (nonce_len == -2) {
        say("attest: document error: " NONCE_PREFIX " is not 1 to %d bytes of hex", NONCE_MAX);
        return;
    }
    memcpy(request, head, sizeof head);
    if (nonce_len < 0) {
        request[n++] = 0xF6; /* null: no eifbuild.nonce= word */
    } else {
        if (nonce_len < 24) {
            request[n++] = (unsigned char)(0x40 | nonce_len);
        } else {
            request[n++] = 0x58;
            request[n++] = (unsigned char)nonce_len;
        }
        memcpy(request + n, nonce, (size_t)nonce_len);
        n += (size_t)nonce_len;
    }
    memcpy(request + n, tail, sizeof tail);
    n += sizeof tail;
    struct nsm_raw raw = {{(uintptr_t)request, n}, {(uintptr_t)response, sizeof response}};
    if (ioctl(nsm, NSM_IOCTL_RAW, &raw) != 0) {
        say("attest: document error: ioctl NSM_IOCTL_RAW: %s", strerror(errno));
        return;
    }
    struct cbor c = {response, response + (raw.response.len < sizeof response ? raw.response.len : sizeof response)};
    char error[128] = "cannot parse the NSM's answer";
    const unsigned char *doc;
    size_t len;
    if (parse_attestation(&c, &doc, &len, error, sizeof error) != 0 || len == 0) {
        say("attest: document error: %s", error);
        return;
    }
    print_document(doc, len);
}

/* Print PCR0, 1, 2 and 8 as the NSM holds them and an attestation document, for `eifbuild boot
 * --attest` to compare and verify. */
static void attest(void)
{
    static const unsigned indexes[] = {0, 1, 2, 8};
    int nsm = open(NSM_DEVICE, O_RDWR | O_CLOEXEC);
    if (nsm < 0) {
        say("attest: unavailable: open " NSM_DEVICE ": %s", strerror(errno));
        return;
    }
    for (size_t i = 0; i < sizeof indexes / sizeof *indexes; i++)
        describe_pcr(nsm, indexes[i]);
    attestation_document(nsm);
    close(nsm);
}

/* Read a newline-separated list (one entry per line, a final newline optional) and delete the
 * file. Returns a NULL-terminated array, or NULL for an empty file. */
/* Bring "lo" up; the kernel then assigns 127.0.0.1/8 (and ::1 with IPv6) by itself. Any socket
 * family can carry the interface ioctls: AF_UNIX works on kernels without IPv4. */
static void loopback_up(void)
{
    static const int families[] = {AF_INET, AF_INET6, AF_UNIX};
    int fd = -1;
    for (size_t i = 0; i < sizeof families / sizeof families[0] && fd < 0; i++)
        fd = socket(families[i], SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EAFNOSUPPORT)
            return; /* no networking in this kernel */
        die("loopback: socket");
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        if (errno == ENODEV) {
            close(fd);
            return;
        }
        die("loopback: read the flags of lo");
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        die("loopback: bring lo up");
    close(fd);
}

static char **read_lines(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open %s (the app ramdisk must contain /cmd and /env)", path);
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_LINE_FILE)
                die_plain("%s is larger than %u bytes", path, MAX_LINE_FILE);
            cap = cap ? cap * 2 : 4096;
            data = xrealloc(data, cap + 1);
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read %s", path);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (unlink(path) != 0)
        say("warning: cannot delete %s (%s)", path, strerror(errno));
    if (len == 0) {
        free(data);
        return NULL;
    }
    data[len] = '\0';
    size_t count = 0;
    char **list = NULL;
    for (char *line = data; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        if (nl)
            *nl = '\0';
        list = xrealloc(list, (count + 2) * sizeof *list);
        list[count++] = line;
        line = nl ? nl + 1 : data + len;
    }
    list[count] = NULL;
    return list;
}

static void switch_root(void)
{
    if (mount("/rootfs", "/rootfs", NULL, MS_BIND, NULL) != 0)
        die("bind mount /rootfs (the app ramdisk must contain /rootfs)");
    if (chdir("/rootfs") != 0)
        die("chdir /rootfs");
    if (mount(".", "/", NULL, MS_MOVE, NULL) != 0)
        die("move /rootfs onto /");
    if (chroot(".") != 0)
        die("chroot /rootfs");
    if (chdir("/") != 0)
        die("chdir / in /rootfs");
}

static void mount_in_root(const char *source, const char *target, const char *type, unsigned long flags,
                          const char *data)
{
    if (mount(source, target, type, flags, data) != 0)
        die("mount %s on /rootfs%s", type, target);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die("mkdir /rootfs%s", path);
}

static void make_link(const char *target, const char *path)
{
    if (symlink(target, path) != 0 && errno != EEXIST)
        die("symlink /rootfs%s -> %s", path, target);
}

static void mount_cgroups(void)
{
    const unsigned long flags = MS_NODEV | MS_NOSUID | MS_NOEXEC;
    FILE *f = fopen("/proc/cgroups", "re");
    char line[256];
    if (!f)
        die("open /proc/cgroups (the kernel needs CONFIG_CGROUPS)");
    while (fgets(line, sizeof line, f)) {
        char name[64];
        unsigned hierarchy, count, enabled;
        if (line[0] == '#')
            continue;
        if (sscanf(line, "%63s %u %u %u", name, &hierarchy, &count, &enabled) != 4)
            die_plain("cannot parse /proc/cgroups line: %s", line);
        if (!enabled)
            continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s", name);
        make_dir(path);
        if (mount(name, path, "cgroup", flags, name) != 0)
            die("mount cgroup %s on /rootfs%s", name, path);
    }
    if (ferror(f))
        die("read /proc/cgroups");
    fclose(f);
}

static void setup_root(void)
{
    const unsigned long flags = MS_NODEV | MS_NOSUID | MS_NOEXEC;
    mount_dev("/rootfs");
    mount_in_root("proc", "/proc", "proc", flags, NULL);
    make_link("/proc/self/fd", "/dev/fd");
    make_link("/proc/self/fd/0", "/dev/stdin");
    make_link("/proc/self/fd/1", "/dev/stdout");
    make_link("/proc/self/fd/2", "/dev/stderr");
    mount_in_root("run", "/run", "tmpfs", flags, "mode=0755");
    mount_in_root("tmp", "/tmp", "tmpfs", flags, NULL);
    make_dir("/dev/shm");
    mount_in_root("shm", "/dev/shm", "tmpfs", flags, NULL);
    make_dir("/dev/pts");
    mount_in_root("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, NULL);
    mount_in_root("sysfs", "/sys", "sysfs", flags, NULL);
    mount_in_root("cgroup_root", "/sys/fs/cgroup", "tmpfs", flags, "mode=0755");
    mount_cgroups();
}

/* PATH=... from the app's environment, or NULL. */
static const char *env_path(char **envp)
{
    for (; envp && *envp; envp++)
        if (strncmp(*envp, "PATH=", 5) == 0)
            return *envp + 5;
    return NULL;
}

/* Try execve on every dir of a colon-separated list; returns the most telling errno. */
static int exec_in(const char *dirs, char **argv, char **envp, int err)
{
    size_t name_len = strlen(argv[0]);
    while (dirs) {
        const char *end = strchr(dirs, ':');
        size_t dir_len = end ? (size_t)(end - dirs) : strlen(dirs);
        char *path = malloc(dir_len + name_len + 3); /* "." for an empty entry, "/", NUL */
        if (!path)
            return ENOMEM;
        memcpy(path, dirs, dir_len);
        if (dir_len == 0)
            path[dir_len++] = '.';
        path[dir_len] = '/';
        memcpy(path + dir_len + 1, argv[0], name_len + 1);
        execve(path, argv, envp);
        if (errno != ENOENT && errno != ENOTDIR)
            err = errno; /* found but not runnable: report that, keep looking like execvp */
        free(path);
        dirs = end ? end + 1 : NULL;
    }
    return err;
}

static _Noreturn void run_command(char **argv, char **envp)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    if (setsid() < 0)
        say("warning: setsid failed (%s)", strerror(errno));
    const char *path = env_path(envp);
    int err;
    if (argv[0][0] == '\0') {
        err = ENOENT;
    } else if (strchr(argv[0], '/')) {
        execve(argv[0], argv, envp);
        err = errno;
    } else {
        err = exec_in(path, argv, envp, ENOENT);
        err = exec_in(DEFAULT_PATH, argv, envp, err);
    }
    if (argv[0][0] != '\0' && !strchr(argv[0], '/') && err == ENOENT)
        say("cannot run '%s': not found in PATH=%s (nor in %s)", argv[0], path ? path : "(unset)",
            DEFAULT_PATH);
    else
        say("cannot run '%s': %s", argv[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* Reap every child (orphans included) until `main_pid` exits; report how it ended. */
static void reap_until(pid_t main_pid)
{
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            die("wait");
        }
        if (pid != main_pid)
            continue;
        if (WIFEXITED(status))
            say("command exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            say("command killed by signal %d", WTERMSIG(status));
        return;
    }
}

static _Noreturn void shutdown_machine(void)
{
    int how = RB_AUTOBOOT;
#if defined(__aarch64__)
    if (local_mode)
        how = RB_POWER_OFF;
#endif
    say(how == RB_POWER_OFF ? "powering off (" LOCAL_FLAG ")" : "rebooting");
    sync();
    reboot(how);
    die("reboot");
}

int main(void)
{
    static char *default_cmd[] = {"sh", NULL};
    static char *default_env[] = {"PATH=" DEFAULT_PATH, NULL};
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);

    mount_dev("");
    open_console();
    read_cmdline_flags();
    if (local_mode)
        say("local run (" LOCAL_FLAG ")");
    load_nsm();
    heartbeat();
    if (attest_mode)
        attest();

    char **env = read_lines("/env");
    char **cmd = read_lines("/cmd");
    if (!env)
        env = default_env;
    if (!cmd)
        cmd = default_cmd;

    loopback_up();
    switch_root();
    setup_root();

    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        run_command(cmd, env);
    reap_until(pid);
    shutdown_machine();
}
