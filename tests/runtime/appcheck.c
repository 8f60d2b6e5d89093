/*
 * What an app kernel gives a program, checked from inside the enclave (tests/runtime/
 * test_boot_app_kernel.py): run as the interpreter of a `#!/app/appcheck` script (binfmt_script
 * passes the script's path as argv[1]), it checks that eifbuild's init brought `lo` up (IFF_UP),
 * talks TCP to itself on 127.0.0.1 and ::1, calls the system calls runtimes expect (ENOSYS is a
 * failure), prints the wall clock's date and the hardware RNG in use, and exits 1 if anything failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int failed;

static void syscall_exists(const char *name, long rc)
{
    if (rc < 0 && errno == ENOSYS) {
        printf("appcheck: %s: ENOSYS\n", name);
        failed = 1;
    }
}

/* 1 when eifbuild's init brought the loopback interface up, 0 when it is down, -1 on error */
static int lo_is_up(void)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return -1;
    int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    close(fd);
    return rc < 0 ? -1 : (ifr.ifr_flags & IFF_UP) != 0;
}

/* listen on addr (port 0), connect to it, send "ping" and read it back */
static const char *tcp_to_self(int family, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, addr, &in->sin_addr);
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, addr, &in6->sin6_addr);
        len = sizeof *in6;
    }
    int srv = socket(family, SOCK_STREAM, 0);
    if (srv < 0)
        return "socket";
    if (bind(srv, (struct sockaddr *)&ss, len) < 0)
        return "bind";
    if (listen(srv, 1) < 0 || getsockname(srv, (struct sockaddr *)&ss, &len) < 0)
        return "listen";
    int cli = socket(family, SOCK_STREAM, 0);
    if (cli < 0 || connect(cli, (struct sockaddr *)&ss, len) < 0)
        return "connect";
    int conn = accept(srv, NULL, NULL);
    if (conn < 0)
        return "accept";
    char buf[5] = {0};
    if (write(cli, "ping", 4) != 4 || read(conn, buf, 4) != 4 || strcmp(buf, "ping") != 0)
        return "ping";
    close(conn);
    close(cli);
    close(srv);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        printf("appcheck: run by #! for %s\n", argv[1]);
    int up = lo_is_up();
    printf("appcheck: lo is %s\n", up > 0 ? "up (init)" : up == 0 ? "DOWN" : strerror(errno));
    if (up <= 0)
        failed = 1;
    const char *v4 = tcp_to_self(AF_INET, "127.0.0.1");
    printf("appcheck: TCP on 127.0.0.1: %s%s\n", v4 ? "failed at " : "OK", v4 ? v4 : "");
    const char *v6 = tcp_to_self(AF_INET6, "::1");
    printf("appcheck: TCP on ::1: %s%s\n", v6 ? "failed at " : "OK", v6 ? v6 : "");
    if (v4 || v6)
        failed = 1;

    syscall_exists("membarrier", syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0));
    syscall_exists("rseq", syscall(SYS_rseq, NULL, 0, 0, 0));
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 1, &ctx) == 0)
        syscall(SYS_io_destroy, ctx);
    else
        syscall_exists("io_setup", -1);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    syscall_exists("madvise", madvise(page, 4096, MADV_DONTNEED));
    unsigned int action = SECCOMP_RET_KILL_PROCESS;
    syscall_exists("seccomp", syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action));
    syscall_exists("inotify_init1", inotify_init1(0));
    syscall_exists("shmget", shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    syscall_exists("mq_open", syscall(SYS_mq_open, "appcheck", O_RDONLY, 0, NULL));

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    printf("appcheck: the clock says %04d-%02d-%02d\n", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    char rng[64] = "none";
    int fd = open("/sys/class/misc/hw_random/rng_current", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, rng, sizeof rng - 1);
        rng[n > 0 ? n : 0] = 0;
        rng[strcspn(rng, "\n")] = 0;
        close(fd);
    }
    printf("appcheck: hwrng: %s\n", rng);
    printf("appcheck: %s\n", failed ? "FAILED" : "all OK");
    return failed;
}
