"""Result tables as MRML table nodes (both modules show their results in one)."""


def addStringTable(scene, name: str, columns, rows):
    """A new table node of text columns filled with ``rows`` (both modules' result tables)."""
    import vtk

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for title in columns:
        column = vtk.vtkStringArray()
        column.SetName(title)
        table.AddColumn(column)
    for row in rows:
        rowIndex = table.AddEmptyRow()
        for columnIndex, text in enumerate(row):
            table.SetCellText(rowIndex, columnIndex, text)
    return table
