/*
 * The demo app: prints one line, with the value of HELLO_NAME from the enclave's environment
 * (the /env file of the app ramdisk), and exits 0. Built static for the EIF's arch by zig:
 *   eifbuild's toolchain compiles it like init (python -m ziglang cc -target <arch>-linux-musl).
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *name = getenv("HELLO_NAME");
    printf("Hello from the enclave, %s!", name ? name : "stranger (HELLO_NAME is not set)");
    for (int i = 1; i < argc; i++)
        printf(" [%s]", argv[i]);
    printf("\n");
    return fflush(stdout) == 0 ? 0 : 1;
}
