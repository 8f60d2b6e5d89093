/* Fails under -Wall -Wextra -Werror (unused parameter), compiles without them. */
static int twice(int x, int unused) {
    return 2 * x;
}

int main(void) {
    return twice(0, 1);
}
