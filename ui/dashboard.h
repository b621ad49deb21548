/* The ncurses dashboard: `vmws` with no arguments. */
#ifndef VMWS_UI_DASHBOARD_H
#define VMWS_UI_DASHBOARD_H

/* Runs the dashboard on the terminal until the user quits (VMs keep running). SELECT names
 * the VM selected at start (NULL: "default", else the first). Returns an exit status. */
int dashboard_run(const char *select);

#endif
