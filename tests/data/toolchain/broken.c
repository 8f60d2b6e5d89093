/* Does not compile: the test checks that the compiler's message reaches the user. */
int main(void) {
    return undeclared_value;
}
