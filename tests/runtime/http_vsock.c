/* An HTTP/1.0 server on vsock port 5000 (VMADDR_CID_ANY), for test_publish_nitro.py: the
 * enclave's app behind `eifbuild boot --publish`. One child per connection (fork), so connections
 * are served at once.
 *
 *   GET /small  "hello from the enclave\n"
 *   GET /big    BIG_SIZE bytes, byte i = i % 251 (a prime: a lost or repeated packet shows)
 *   GET /close  closes at once, without answering or reading the rest (the enclave closes first)
 *   POST /upload  reads its Content-Length bytes: "<count> bytes, fnv1a <hex>\n"
 *   GET /quit   "bye\n"; the server exits once it and every other connection are done
 *   other       404
 *
 * After answering, a child shuts down its sending side and reads until the host closes: the host
 * then has every byte, so the server exiting (and the machine rebooting) loses nothing. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define PORT 5000
#define BIG_SIZE (6u << 20)
#define QUIT_STATUS 42

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int respond(int fd, const char *status, const char *body, size_t size)
{
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Length: %zu\r\nContent-Type: application/octet-stream\r\n\r\n",
                     status, size);
    if (write_all(fd, head, (size_t)n) != 0)
        return -1;
    if (body != NULL)
        return write_all(fd, body, size);
    static char chunk[251 * 256];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)(i % 251);
    for (size_t sent = 0; sent < size;) {
        size_t part = size - sent < sizeof chunk ? size - sent : sizeof chunk;
        if (write_all(fd, chunk, part) != 0)
            return -1;
        sent += part;
    }
    return 0;
}

/* Reads the body of an upload (``have`` bytes of it came with the head); its answer in ``out``. */
static void upload(int fd, const char *req, const char *body, size_t have, char *out, size_t room)
{
    const char *length = strstr(req, "Content-Length: ");
    size_t want = length != NULL ? strtoul(length + 16, NULL, 10) : 0, count = 0;
    unsigned hash = 2166136261u;
    static char buf[1 << 16];
    for (;;) {
        for (size_t i = 0; i < have && count < want; i++, count++)
            hash = (hash ^ (unsigned char)body[i]) * 16777619u;
        if (count >= want)
            break;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        body = buf;
        have = (size_t)n;
    }
    snprintf(out, room, "%zu bytes, fnv1a %08x\n", count, hash);
}

static void serve(int fd)
{
    char req[2048];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(fd, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    req[got] = 0;
    int status = 0, failed = 0;
    char answer[64];
    if (strncmp(req, "GET /close ", 11) == 0) {
        close(fd);
        _exit(0);
    }
    if (strncmp(req, "GET /small ", 11) == 0)
        failed = respond(fd, "200 OK", "hello from the enclave\n", 23);
    else if (strncmp(req, "GET /big ", 9) == 0)
        failed = respond(fd, "200 OK", NULL, BIG_SIZE);
    else if (strncmp(req, "POST /upload ", 13) == 0) {
        char *end = strstr(req, "\r\n\r\n");
        size_t head = end != NULL ? (size_t)(end + 4 - req) : got;
        upload(fd, req, req + head, got - head, answer, sizeof answer);
        failed = respond(fd, "200 OK", answer, strlen(answer));
    } else if (strncmp(req, "GET /quit ", 10) == 0) {
        failed = respond(fd, "200 OK", "bye\n", 4);
        status = QUIT_STATUS;
    } else
        failed = respond(fd, "404 Not Found", "", 0);
    if (failed)
        perror("http-vsock: write");
    shutdown(fd, SHUT_WR);
    while (read(fd, req, sizeof req) > 0) {
    }
    close(fd);
    _exit(status);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = PORT};
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 128) != 0) {
        perror("http-vsock: listen");
        return 1;
    }
    printf("http-vsock: listening on vsock port %d\n", PORT);
    fflush(stdout);
    int quit = 0, live = 0, served = 0;
    for (;;) {
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            live--;
            if (WIFEXITED(st) && WEXITSTATUS(st) == QUIT_STATUS)
                quit = 1;
        }
        if (quit && live == 0)
            break;
        struct pollfd ready = {.fd = fd, .events = POLLIN};
        if (quit || poll(&ready, 1, 100) <= 0) {
            if (quit)
                poll(NULL, 0, 100);
            continue;
        }
        int conn = accept(fd, NULL, NULL);
        if (conn < 0)
            continue;
        pid = fork();
        if (pid == 0) {
            close(fd);
            serve(conn);
        }
        close(conn);
        if (pid > 0) {
            live++;
            served++;
        }
    }
    printf("http-vsock: served %d connections\n", served);
    return 0;
}
