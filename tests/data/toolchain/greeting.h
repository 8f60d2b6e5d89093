#define GREETING "greetings from a header"
