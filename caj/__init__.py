"""`caj`: the operator's command line for caj-tracker."""
