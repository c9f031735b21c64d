"""The cluster fault test (`make faults`, also run by `.ci/run`)."""

#: lines the test reports (recovery time, events sent/handled/lost, duplicates), printed at the end
FIGURES = []
