/* Clean under init.c's flags (-Wall -Wextra -Werror -Wno-missing-field-initializers), but only
 * with -Wno-missing-field-initializers: the table leaves out fields, as AWS init.c's ops[] does. */
#include <stdio.h>

struct op {
    const char *name;
    const char *target;
    unsigned long flags;
};

static const struct op ops[] = {
    {"proc", "/proc"},
    {"sys", "/sys", 1},
};

int main(void) {
    for (unsigned i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        printf("%s %s %lu\n", ops[i].name, ops[i].target, ops[i].flags);
    }
    return 0;
}
