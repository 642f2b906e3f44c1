/* cli/cmd_template.c - `cowpool template`: templates and clones through
 * cowpoold.  The options come from api/methods.def. */
#include <stdio.h>

#include "cli.h"

#define V "template"

static const struct cli_subcmd tmpl_subs[] = {
    {.name = "create", .method = "template.create",
     .help = "Collapses the chain of IMAGE (up to VOL, default its leaf) "
	     "into one\nshared volume in a new image.\n"},
    {.name = "clone", .method = "template.clone",
     .help = "A new disk from a template: a thin qcow2 overlay, or with "
	     "--full an\nindependent copy.\n"},
    {.name = NULL},
};

int cli_cmd_template(int argc, char **argv)
{
	return cli_verb_dispatch(V, tmpl_subs, argc, argv);
}
