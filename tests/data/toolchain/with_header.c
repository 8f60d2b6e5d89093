/* Includes a header listed among the sources: it is copied beside this file, not compiled. */
#include <stdio.h>

#include "greeting.h"

int main(void) {
    puts(GREETING);
    return 0;
}
