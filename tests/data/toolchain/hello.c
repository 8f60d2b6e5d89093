/* Test program for tests/test_toolchain.py: prints its target, its argument and __FILE__. */
#include <stdio.h>

#if defined(__x86_64__)
#define ARCH "x86_64"
#elif defined(__aarch64__)
#define ARCH "aarch64"
#else
#error "unexpected target"
#endif

int main(int argc, char **argv) {
    printf("hello from %s, arg=%s, file=%s\n", ARCH, argc > 1 ? argv[1] : "-", __FILE__);
    return argc > 2 ? 3 : 0;
}
