/* A second program, compiled concurrently with hello.c on a cold zig cache. */
#include <stdio.h>
#include <string.h>

int main(void) {
    char buf[32];
    strcpy(buf, "other");
    printf("%s %zu\n", buf, strlen(buf));
    return 0;
}
